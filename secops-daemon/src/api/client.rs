//! The blocking client side of the API, for the CLI and the launcher: one HTTP/1.1 request
//! per connection over the daemon's Unix socket. The daemon always answers with a
//! `Content-Length` body, which is all this client reads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::ErrorBody;

/// The largest reply read (an audit query answer is the biggest there is).
const MAX_REPLY_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the secops daemon at {socket}: {source} (is `secops daemon` running?)")]
    Connect {
        socket: String,
        source: std::io::Error,
    },
    #[error("talking to the secops daemon at {socket}: {source}")]
    Io {
        socket: String,
        source: std::io::Error,
    },
    #[error("the secops daemon at {socket} sent a reply that is not understood: {why}")]
    BadReply { socket: String, why: String },
    /// The daemon answered, and said no (a 4xx or 5xx with its reason).
    #[error("the daemon refused ({status}): {message}")]
    Refused { status: u16, message: String },
}

pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: &Path, timeout: Duration) -> Client {
        Client {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("GET", path, None)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.bad(e.to_string()))?;
        self.call("POST", path, Some(&body))
    }

    /// The raw answer to a GET: status and body (for `/metrics`, which is not JSON).
    pub fn get_text(&self, path: &str) -> Result<(u16, String), ClientError> {
        let (status, body) = self.exchange("GET", path, None)?;
        let text = String::from_utf8(body).map_err(|e| self.bad(e.to_string()))?;
        Ok((status, text))
    }

    /// Connects now and sends a POST later over that connection: for a caller that cannot
    /// connect(2) at the time it sends (`secops run --ask`, whose filter holds connect for
    /// the daemon the request is about).
    pub fn connect_now(&self) -> Result<Connected<'_>, ClientError> {
        Ok(Connected {
            client: self,
            stream: self.open()?,
        })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let (status, body) = self.exchange(method, path, body)?;
        self.answer(status, body)
    }

    fn answer<T: DeserializeOwned>(&self, status: u16, body: Vec<u8>) -> Result<T, ClientError> {
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused { status, message });
        }
        serde_json::from_slice(&body).map_err(|e| self.bad(e.to_string()))
    }

    fn open(&self) -> Result<UnixStream, ClientError> {
        let name = self.socket.display().to_string();
        let stream = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            socket: name.clone(),
            source,
        })?;
        let io = |source| ClientError::Io {
            socket: name.clone(),
            source,
        };
        stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
        Ok(stream)
    }

    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        self.exchange_over(self.open()?, method, path, body)
    }

    fn exchange_over(
        &self,
        mut stream: UnixStream,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let name = self.socket.display().to_string();
        let io = |source| ClientError::Io {
            socket: name.clone(),
            source,
        };
        let body = body.unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: secops\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        // The daemon may answer (a refusal, say) and close before reading the whole body;
        // its answer is still there to read, so a failed write is only an error if no answer
        // follows.
        let written = stream.write_all(&request);
        let mut reply = Vec::new();
        let read = (&mut stream)
            .take(MAX_REPLY_BYTES + 1)
            .read_to_end(&mut reply);
        if let (Err(e), true) = (read, reply.is_empty()) {
            return Err(io(written.err().unwrap_or(e)));
        }
        if reply.is_empty() {
            if let Err(e) = written {
                return Err(io(e));
            }
        }
        if reply.len() as u64 > MAX_REPLY_BYTES {
            return Err(self.bad(format!("reply longer than {MAX_REPLY_BYTES} bytes")));
        }
        parse_reply(&reply).map_err(|why| self.bad(why))
    }

    fn bad(&self, why: String) -> ClientError {
        ClientError::BadReply {
            socket: self.socket.display().to_string(),
            why,
        }
    }
}

/// A connection made ahead of its request (see [`Client::connect_now`]).
pub struct Connected<'a> {
    client: &'a Client,
    stream: UnixStream,
}

impl Connected<'_> {
    pub fn post<B: Serialize, T: DeserializeOwned>(
        self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let client = self.client;
        let body = serde_json::to_vec(body).map_err(|e| client.bad(e.to_string()))?;
        let (status, reply) = client.exchange_over(self.stream, "POST", path, Some(&body))?;
        client.answer(status, reply)
    }
}

/// Splits a whole HTTP/1.1 reply into its status and body.
fn parse_reply(reply: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(reply) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the reply ended inside its headers".into()),
        Err(e) => return Err(format!("malformed reply: {e}")),
    };
    let status = response.code.ok_or("reply without a status")?;
    let mut length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked replies are not expected from the daemon".into());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("bad Content-Length")?;
            length = Some(value);
        }
    }
    let body = &reply[head_len..];
    match length {
        Some(n) if body.len() < n => Err(format!(
            "the reply ended after {} of {n} body bytes",
            body.len()
        )),
        Some(n) => Ok((status, body[..n].to_vec())),
        None => Ok((status, body.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_reply;

    #[test]
    fn replies_parse_by_content_length() {
        let (status, body) =
            parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").expect("parse");
        assert_eq!((status, body.as_slice()), (200, &b"{}"[..]));
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\ncontent-le").is_err());
        assert!(
            parse_reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").is_err()
        );
    }
}
