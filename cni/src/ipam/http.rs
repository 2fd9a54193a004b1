//! A minimal HTTP/1.0 GET for the host agent, with a hard deadline and a size cap.
//!
//! The host agent speaks plain HTTP on 168.63.129.16; one small GET does not justify an HTTP
//! client dependency in a binary that is exec'd for every pod.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::skel::error::{Error, Result};

/// Answers larger than this are refused (a real interface list is a few KiB).
const MAX_BODY: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl> {
        let invalid = |why: &str| Error::InvalidConfig(format!("queryUrl {s:?} {why}"));
        let rest = s.strip_prefix("http://").ok_or_else(|| invalid("must start with http://"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| invalid("has an invalid port"))?)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(invalid("has no valid host"));
        }
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        Ok(HttpUrl { host: host.to_string(), port, path })
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// GETs the URL; the whole exchange must finish within `timeout`.
/// Unreachable, timed out or 5xx: code 11. 4xx: code 103. Garbage: code 104.
pub fn get(url: &HttpUrl, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let unreachable = |why: String| Error::TryAgainLater(format!("host agent at {url} unreachable: {why}"));
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| unreachable(format!("resolving host: {e}")))?
        .next()
        .ok_or_else(|| unreachable("host has no address".into()))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| unreachable(e.to_string()))?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: azure-vnet-ipam\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    let remaining =
        |deadline: Instant| deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(remaining(deadline))).map_err(|e| unreachable(e.to_string()))?;
    stream.write_all(request.as_bytes()).map_err(|e| unreachable(format!("sending request: {e}")))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(unreachable(format!("no complete answer within {timeout:?}")));
        }
        stream.set_read_timeout(Some(remaining(deadline))).map_err(|e| unreachable(e.to_string()))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(unreachable(format!("no complete answer within {timeout:?}")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(unreachable(format!("reading answer: {e}"))),
        }
        if raw.len() > MAX_BODY {
            return Err(Error::BadSourceAnswer(format!("answer from {url} exceeds {MAX_BODY} bytes")));
        }
    }
    let (status, body) =
        split_response(&raw).map_err(|why| Error::BadSourceAnswer(format!("{url}: {why}")))?;
    match status {
        200..=299 => Ok(body),
        400..=499 => Err(Error::SourceRefused(format!("{url} answered HTTP {status}"))),
        _ => Err(Error::TryAgainLater(format!("{url} answered HTTP {status}"))),
    }
}

/// Splits a raw HTTP/1.x response into status and (de-chunked) body.
pub fn split_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let proto = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let status = match (proto.starts_with("HTTP/1."), status) {
        (true, Some(s)) if (100..600).contains(&s) => s,
        _ => return Err(format!("bad status line {status_line:?}")),
    };
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &raw[end + 4..];
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_parse_with_and_without_port_and_path() {
        let u = HttpUrl::parse("http://168.63.129.16/machine/plugins?comp=nmagent&type=getinterfaceinfov1")
            .unwrap();
        assert_eq!((u.host.as_str(), u.port), ("168.63.129.16", 80));
        assert_eq!(u.path, "/machine/plugins?comp=nmagent&type=getinterfaceinfov1");
        let u = HttpUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/"));
        let u = HttpUrl::parse("http://[::1]:81/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        for bad in ["https://x/", "ftp://x", "http://", "http://h:99999/", "http://a@b/"] {
            assert_eq!(HttpUrl::parse(bad).unwrap_err().code(), 7, "{bad}");
        }
    }

    #[test]
    fn responses_split_plain_and_chunked() {
        let (s, b) = split_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!((s, b.as_slice()), (200, b"hi".as_slice()));
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(split_response(raw).unwrap().1, b"abcde");
        for bad in [
            &b"garbage"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(split_response(bad).is_err());
        }
    }

    fn serve_once(answer: &'static [u8]) -> HttpUrl {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer);
            }
        });
        HttpUrl::parse(&format!("http://127.0.0.1:{port}/q")).unwrap()
    }

    #[test]
    fn status_classes_map_to_codes() {
        let t = Duration::from_secs(5);
        assert_eq!(get(&serve_once(b"HTTP/1.0 200 OK\r\n\r\n<x/>"), t).unwrap(), b"<x/>");
        assert_eq!(get(&serve_once(b"HTTP/1.0 403 Forbidden\r\n\r\n"), t).unwrap_err().code(), 103);
        assert_eq!(get(&serve_once(b"HTTP/1.0 503 Busy\r\n\r\n"), t).unwrap_err().code(), 11);
        assert_eq!(get(&serve_once(b"SSH-2.0-nope\r\n"), t).unwrap_err().code(), 104);
    }

    #[test]
    fn a_silent_server_times_out_with_code_11() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = HttpUrl::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        assert_eq!(get(&url, Duration::from_millis(200)).unwrap_err().code(), 11);
        drop(l);
    }
}
