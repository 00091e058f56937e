//! The request head of the metrics port: the request line split into what `http.rs` routes on.
//! Pure, so it can be fuzzed and unit-tested without sockets.

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method as sent (`GET`, `HEAD`, `OPTIONS`, or anything else, refused later).
    pub method: &'a str,
    /// The target's path, before any `?`.
    pub path: &'a str,
    /// The target's query, after the first `?` (empty without one).
    pub query: &'a str,
}

impl<'a> Request<'a> {
    /// Reads the request line from `head` (the bytes up to the blank line). A line that is not
    /// UTF-8 or has no target yields empty fields, which route to 405 or 404.
    pub fn parse(head: &'a [u8]) -> Self {
        let end = head.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(head.len());
        let line = std::str::from_utf8(&head[..end]).unwrap_or("");
        let mut parts = line.split_ascii_whitespace();
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request { method, path, query }
    }

    /// Whether the answer carries headers only: HEAD, and OPTIONS (HAProxy's checks in Pigsty's
    /// style send OPTIONS, which Patroni answers like HEAD).
    pub fn head_only(&self) -> bool {
        self.method == "HEAD" || self.method == "OPTIONS"
    }

    /// Whether the method is one the port serves.
    pub fn method_allowed(&self) -> bool {
        self.method == "GET" || self.head_only()
    }
}

/// Whether `buf` holds a whole request head (ends with a blank line).
pub fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_method_path_and_query() {
        let r = Request::parse(b"GET /replica?lag=10MB HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.method, r.path, r.query), ("GET", "/replica", "lag=10MB"));
        assert!(r.method_allowed() && !r.head_only());
        let r = Request::parse(b"OPTIONS /primary HTTP/1.0\r\n\r\n");
        assert_eq!((r.method, r.path, r.query), ("OPTIONS", "/primary", ""));
        assert!(r.head_only());
    }

    #[test]
    fn broken_lines_yield_empty_fields() {
        assert_eq!(Request::parse(b"").method, "");
        assert_eq!(Request::parse(b"GET").path, "");
        assert_eq!(Request::parse(b"\xff\xfe /x HTTP/1.1\r\n\r\n").method, "");
        assert!(!Request::parse(b"POST /metrics HTTP/1.1\r\n\r\n").method_allowed());
        assert!(head_complete(b"GET / HTTP/1.1\r\n\r\n") && !head_complete(b"GET / HTTP/1.1\r\n"));
    }
}
