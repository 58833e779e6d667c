//! The blocking client side of the control socket, for the CLI and the launcher.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{Request, Response, MAX_LINE_BYTES};

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
}

/// Sends one request and reads the one-line reply.
pub fn request(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let name = socket.display().to_string();
    let io = |source| ClientError::Io {
        socket: name.clone(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        socket: name.clone(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::BadReply {
        socket: name.clone(),
        why: e.to_string(),
    })?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io)?;
    let mut reply = Vec::new();
    BufReader::new(&stream)
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', &mut reply)
        .map_err(io)?;
    if reply.len() > MAX_LINE_BYTES {
        return Err(ClientError::BadReply {
            socket: name,
            why: "reply too long".into(),
        });
    }
    serde_json::from_slice(&reply).map_err(|e| ClientError::BadReply {
        socket: name,
        why: e.to_string(),
    })
}
