//! Asking an agent's upstream resolvers: a fresh query of secops' own for each question (see
//! [`upstream_query`]), from a fresh socket (a random source port), answered only by a
//! response with the same id and question; over TCP when the UDP answer was truncated; the
//! next resolver when one fails.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::message::upstream_query;

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error("{server}: {source}")]
    Io {
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("{server}: no answer within {timeout:?}")]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
    },
    #[error("{server}: the answer was not a DNS response to the question")]
    Mismatch { server: SocketAddr },
}

/// Asks `servers` in order, each for at most `timeout`, and returns the first response.
pub(crate) async fn ask(
    servers: &[SocketAddr],
    name: &Name,
    qtype: RecordType,
    timeout: Duration,
) -> Result<Message, UpstreamError> {
    let mut last = UpstreamError::NoUpstream;
    for &server in servers {
        match tokio::time::timeout(timeout, ask_one(server, name, qtype)).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(e)) => last = e,
            Err(_) => last = UpstreamError::Timeout { server, timeout },
        }
    }
    Err(last)
}

async fn ask_one(
    server: SocketAddr,
    name: &Name,
    qtype: RecordType,
) -> Result<Message, UpstreamError> {
    let io = |source| UpstreamError::Io { server, source };
    let query = upstream_query(name, qtype);
    let bytes = query
        .to_vec()
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(bind).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    socket.send(&bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 4096];
    let response = loop {
        // A connected socket only receives from the server; anything that is not the answer
        // (a late reply, a spoofing attempt with another id) is skipped.
        let n = socket.recv(&mut buf).await.map_err(io)?;
        if let Ok(response) = Message::from_vec(&buf[..n]) {
            if answers(&query, &response) {
                break response;
            }
        }
    };
    if !response.metadata.truncation {
        return Ok(response);
    }
    ask_tcp(server, &query, &bytes).await
}

async fn ask_tcp(
    server: SocketAddr,
    query: &Message,
    bytes: &[u8],
) -> Result<Message, UpstreamError> {
    let io = |source| UpstreamError::Io { server, source };
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| UpstreamError::Mismatch { server })?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.map_err(io)?;
    match Message::from_vec(&buf) {
        Ok(response) if answers(query, &response) => Ok(response),
        _ => Err(UpstreamError::Mismatch { server }),
    }
}

/// Whether `response` answers `query`: a response, same id, same question.
fn answers(query: &Message, response: &Message) -> bool {
    response.metadata.message_type == MessageType::Response
        && response.metadata.id == query.metadata.id
        && response.queries.len() == 1
        && query.queries.first().is_some_and(|q| {
            let r = &response.queries[0];
            r.query_type() == q.query_type() && r.name().eq_ignore_root(q.name())
        })
}
