//! Three real Portcullis processes and a real `redis-server`.
