//! The pool against real sockets on loopback.
