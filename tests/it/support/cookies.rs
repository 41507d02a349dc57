//! A browser's cookie store, reduced to what login → request → refresh → logout flows need:
//! one host, no paths, domains or expiry clocks. `Set-Cookie` adds or replaces a cookie by
//! name; `Max-Age` zero or negative deletes it.
//!
//! ```ignore
//! let mut jar = CookieJar::new();
//! jar.apply(&login_response);
//! let resp = Req::get(&url).jar(&jar).send().await;
//! jar.apply(&resp); // picks up refreshed tokens
//! ```

use super::client::Resp;

/// Cookies by name, in the order they were first set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    pub fn new() -> CookieJar {
        CookieJar::default()
    }

    /// Applies every `Set-Cookie` of `resp`, in order.
    pub fn apply(&mut self, resp: &Resp) {
        for cookie in resp.set_cookies() {
            if cookie.is_removal() {
                self.remove(&cookie.name);
            } else {
                self.set(&cookie.name, &cookie.value);
            }
        }
    }

    /// Adds or replaces a cookie, as if the server had set it.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.cookies.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => value.clone_into(v),
            None => self.cookies.push((name.to_owned(), value.to_owned())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.cookies.retain(|(n, _)| n != name);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    /// The `Cookie` header value: `a=1; b=2` (empty when the jar is).
    pub fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
