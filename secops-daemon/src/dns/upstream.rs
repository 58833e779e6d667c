//! Asking an agent's upstream resolvers: a fresh query of secops' own for each question (see
//! [`upstream_query`]), answered only by a response with the same id and question; over TCP
//! when the UDP answer was truncated; the next resolver when one fails.
//!
//! Queries to one server share a connected UDP socket ([`Pool`]), whose reader task hands
//! each response to the query with its id: a fresh socket per query cost a bind, a connect
//! and two epoll registrations on every miss. A socket is retired after [`SOCKET_QUERIES`]
//! queries or [`SOCKET_LIFETIME`], so the source port an off-path spoofer must guess still
//! changes (16 bits of id alone would be guessed in 65,536 tries); a retired socket lives on
//! until its last query is answered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{Name, RecordType};
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::message::upstream_query;

/// Queries one upstream socket is used for, at most, and for how long.
const SOCKET_QUERIES: u32 = 1024;
const SOCKET_LIFETIME: Duration = Duration::from_secs(30);
/// Queries waiting on one socket at once; past it another socket is opened.
const SOCKET_PENDING: usize = 256;

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

/// The upstream sockets, by server. Needs a tokio runtime (each socket's reader is a task).
#[derive(Default)]
pub(crate) struct Pool {
    sockets: Mutex<HashMap<SocketAddr, Vec<Arc<Pooled>>>>,
}

/// A query waiting on a pooled socket for its response.
struct Waiting {
    /// Which query holds the id (an id answered is free at once, and may be taken again
    /// before the query it belonged to has finished).
    turn: u64,
    query: Message,
    reply: oneshot::Sender<std::io::Result<Message>>,
}

type Pending = Arc<Mutex<HashMap<u16, Waiting>>>;

/// One connected socket to one server.
struct Pooled {
    socket: Arc<UdpSocket>,
    pending: Pending,
    asked: AtomicU32,
    born: Instant,
    reader: JoinHandle<()>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    /// Asks `servers` in order, each for at most `timeout`, and returns the first response.
    pub(crate) async fn ask(
        &self,
        servers: &[SocketAddr],
        name: &Name,
        qtype: RecordType,
        timeout: Duration,
    ) -> Result<Message, UpstreamError> {
        let mut last = UpstreamError::NoUpstream;
        for &server in servers {
            match tokio::time::timeout(timeout, self.ask_one(server, name, qtype)).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(e)) => last = e,
                Err(_) => last = UpstreamError::Timeout { server, timeout },
            }
        }
        Err(last)
    }

    async fn ask_one(
        &self,
        server: SocketAddr,
        name: &Name,
        qtype: RecordType,
    ) -> Result<Message, UpstreamError> {
        let io = |source| UpstreamError::Io { server, source };
        let (pooled, turn) = self.socket(server).await.map_err(io)?;
        let mut query = upstream_query(name, qtype);
        let (answered, mut reply) = oneshot::channel();
        let bytes = {
            let mut pending = lock(&pooled.pending);
            while pending.contains_key(&query.metadata.id) {
                query.metadata.id = OsRng.next_u32() as u16;
            }
            let bytes = query
                .to_vec()
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            pending.insert(
                query.metadata.id,
                Waiting {
                    turn,
                    query: query.clone(),
                    reply: answered,
                },
            );
            bytes
        };
        // However this ends (answered, failed, timed out and dropped), the id is free again.
        let _forget = Forget {
            pending: &pooled.pending,
            id: query.metadata.id,
            turn,
        };
        pooled.socket.send(&bytes).await.map_err(io)?;
        let response = match (&mut reply).await {
            Ok(answer) => answer.map_err(io)?,
            Err(_) => return Err(io(std::io::Error::other("the upstream socket closed"))),
        };
        if !response.metadata.truncation {
            return Ok(response);
        }
        ask_tcp(server, &query, &bytes).await
    }

    /// A fresh enough socket to `server` with room for another query, opened if none is;
    /// and the query's turn on it.
    async fn socket(&self, server: SocketAddr) -> std::io::Result<(Arc<Pooled>, u64)> {
        {
            let mut sockets = lock(&self.sockets);
            let open = sockets.entry(server).or_default();
            let now = Instant::now();
            open.retain(|p| {
                p.asked.load(Ordering::Relaxed) < SOCKET_QUERIES
                    && now.duration_since(p.born) < SOCKET_LIFETIME
            });
            if let Some(p) = open
                .iter()
                .find(|p| lock(&p.pending).len() < SOCKET_PENDING)
            {
                let turn = p.asked.fetch_add(1, Ordering::Relaxed);
                return Ok((p.clone(), turn.into()));
            }
        }
        let pooled = Arc::new(open(server).await?);
        let turn = pooled.asked.fetch_add(1, Ordering::Relaxed);
        lock(&self.sockets)
            .entry(server)
            .or_default()
            .push(pooled.clone());
        Ok((pooled, turn.into()))
    }
}

/// Removes a query's id from its socket's pending set when the query is over.
struct Forget<'a> {
    pending: &'a Pending,
    id: u16,
    turn: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut pending = lock(self.pending);
        if pending.get(&self.id).is_some_and(|w| w.turn == self.turn) {
            pending.remove(&self.id);
        }
    }
}

/// A socket connected to `server` (a random source port), with its reader task.
async fn open(server: SocketAddr) -> std::io::Result<Pooled> {
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    let socket = Arc::new(socket);
    let pending: Pending = Arc::default();
    let reader = tokio::spawn(read_responses(socket.clone(), pending.clone()));
    Ok(Pooled {
        socket,
        pending,
        asked: AtomicU32::new(0),
        born: Instant::now(),
        reader,
    })
}

/// Hands each datagram that answers a waiting query (same id, same question) to it. A
/// connected socket only receives from its server; anything else (a late reply, a spoofing
/// attempt) is dropped. A socket error (the server's port unreachable) fails every query
/// waiting on it, so the next server is asked at once rather than after the timeout.
async fn read_responses(socket: Arc<UdpSocket>, pending: Pending) {
    let mut buf = vec![0u8; 4096];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                let Ok(response) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut pending = lock(&pending);
                let id = response.metadata.id;
                if pending
                    .get(&id)
                    .is_some_and(|w| answers(&w.query, &response))
                {
                    if let Some(waiting) = pending.remove(&id) {
                        let _ = waiting.reply.send(Ok(response));
                    }
                }
            }
            Err(e) => {
                for (_, waiting) in lock(&pending).drain() {
                    let _ = waiting
                        .reply
                        .send(Err(std::io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use hickory_proto::op::OpCode;

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn response_to(query: &Message, id: u16) -> Vec<u8> {
        let mut r = Message::new(id, MessageType::Response, OpCode::Query);
        r.queries = query.queries.clone();
        r.to_vec().expect("encode")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn queries_sharing_a_socket_each_get_their_own_answer_and_spoofs_are_dropped() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = server.local_addr().expect("addr");
        let answering = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut asked = Vec::new();
            for _ in 0..2 {
                let (n, from) = server.recv_from(&mut buf).await.expect("recv");
                asked.push((Message::from_vec(&buf[..n]).expect("query"), from));
            }
            // A reply with an id nobody waits for, then the answers in reverse order.
            let (first, from) = &asked[0];
            let wrong = first.metadata.id.wrapping_add(1);
            if asked[1].0.metadata.id != wrong {
                server
                    .send_to(&response_to(first, wrong), from)
                    .await
                    .expect("send");
            }
            for (query, from) in asked.iter().rev() {
                let reply = response_to(query, query.metadata.id);
                server.send_to(&reply, from).await.expect("send");
            }
        });
        let pool = Pool::default();
        let timeout = Duration::from_secs(2);
        let (a_name, b_name, servers) = (name("a.test."), name("b.test."), [addr]);
        let (a, b) = tokio::join!(
            pool.ask(&servers, &a_name, RecordType::A, timeout),
            pool.ask(&servers, &b_name, RecordType::AAAA, timeout),
        );
        answering.await.expect("server");
        let (a, b) = (a.expect("a"), b.expect("b"));
        assert_eq!(a.queries[0].name(), &name("a.test."));
        assert_eq!(a.queries[0].query_type(), RecordType::A);
        assert_eq!(b.queries[0].name(), &name("b.test."));
        assert_eq!(lock(&pool.sockets)[&addr].len(), 1, "one socket for both");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_whose_port_is_closed_fails_at_once_not_after_the_timeout() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let started = Instant::now();
        let a_name = name("a.test.");
        let result = Pool::default()
            .ask(&[addr], &a_name, RecordType::A, Duration::from_secs(5))
            .await;
        assert!(
            matches!(result, Err(UpstreamError::Io { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
