//! The HTTP witness: each checkpoint line is POSTed to a URL; `verify --witness URL` GETs the
//! lines back. Plain HTTP/1.1 over TCP, one request per connection: checkpoints are signed,
//! so the channel needs no secrecy, and the server is the operator's (`secops witness serve`
//! or anything that keeps the lines it is sent and returns them).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest answer read: a witness of a long-lived log holds many lines.
const MAX_BODY: usize = 256 << 20;

/// `http://host:port/path` split up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: port {p:?} is not a number"))?,
        ),
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(HttpUrl {
        host: host.trim_matches(|c| c == '[' || c == ']').to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// One request; returns the status and the body.
pub fn http_request(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let u = parse_url(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let addr = (u.host.as_str(), u.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or(&[]);
    let head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: secops\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        u.path,
        u.host,
        u.port,
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut reply = Vec::new();
    s.take(MAX_BODY as u64 + 64 * 1024)
        .read_to_end(&mut reply)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let at = match resp.parse(&reply) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(bad("the answer ends inside its headers".into()))
        }
        Err(e) => return Err(bad(format!("the answer is not HTTP: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    let length = content_length(resp.headers);
    let mut body = reply[at..].to_vec();
    if let Some(n) = length {
        if body.len() < n {
            return Err(bad(format!(
                "the answer's body ends after {} of {n} bytes",
                body.len()
            )));
        }
        body.truncate(n);
    }
    Ok((status, body))
}

/// The `Content-Length` of a parsed request or answer, if it has a valid one.
pub(super) fn content_length(headers: &[httparse::Header<'_>]) -> Option<usize> {
    let h = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))?;
    std::str::from_utf8(h.value).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/v1/checkpoints").unwrap(),
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/v1/checkpoints".into()
            }
        );
        assert_eq!(parse_url("http://example.test").unwrap().port, 80);
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://:80/").is_err());
    }
}
