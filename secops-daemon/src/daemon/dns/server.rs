//! The DNS resolver's thread: one current-thread runtime serving every agent's listener (UDP
//! and TCP), so a flood of queries takes at most one core, and the daemon's other threads are
//! not in its way. Its own handle to `secops_egress_names` (never the lock the other maps are
//! behind). Stops with the daemon.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::door::Resolver;
use super::listeners::{AgentRef, Listener};
use super::Command;
use crate::audit::AuditWriter;
use crate::daemon::state::Shared;
use crate::dns::message::Transport;
use crate::kernel::NamesMap;

/// How often the audit window closes (like the aggregated allowed connections).
const WINDOW: u32 = 5;
/// Queries of one agent being answered at once (waiting upstream); past it, a datagram is
/// dropped (the client asks again) and a TCP connection waits.
const IN_FLIGHT: usize = 256;
/// TCP connections of one agent at once, and how long one may idle.
const TCP_CONNECTIONS: usize = 64;
const TCP_IDLE: Duration = Duration::from_secs(10);
const TCP_QUERIES: usize = 128;

pub(crate) struct DnsServer {
    thread: std::thread::JoinHandle<()>,
}

impl DnsServer {
    /// Waits for the thread, which ends once the daemon is stopping.
    pub(crate) fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("the DNS resolver thread panicked");
        }
    }
}

/// Starts the resolver thread (when the layer is active).
pub(crate) fn spawn(
    shared: Arc<Shared>,
    writer: Arc<AuditWriter>,
) -> anyhow::Result<Option<DnsServer>> {
    if !shared.dns.active() {
        return Ok(None);
    }
    let Some(commands) = shared.dns.take_commands() else {
        return Ok(None);
    };
    let mut map = NamesMap::open(&shared.options.pin_dir)
        .context("opening the names map for the DNS resolver")?;
    let stale = map
        .clear()
        .context("clearing addresses an earlier daemon's answers allowed")?;
    if stale > 0 {
        tracing::info!(
            stale,
            "addresses allowed by an earlier daemon's DNS answers removed: agents look them up again"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the DNS resolver's runtime")?;
    let resolver = Arc::new(Resolver::new(shared.clone(), writer, map));
    let thread = std::thread::Builder::new()
        .name("secops-dns".into())
        .spawn(move || runtime.block_on(serve(shared, resolver, commands)))
        .context("starting the DNS resolver thread")?;
    Ok(Some(DnsServer { thread }))
}

async fn serve(
    shared: Arc<Shared>,
    resolver: Arc<Resolver>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
) {
    let mut served: HashMap<u32, Vec<JoinHandle<()>>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u32;
    let mut engine = Arc::as_ptr(&shared.engine()) as usize;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Serve(listener)) => {
                    let index = listener.agent.index;
                    match serve_listener(&resolver, listener) {
                        Ok(tasks) => {
                            if let Some(old) = served.insert(index, tasks) {
                                old.iter().for_each(JoinHandle::abort);
                            }
                        }
                        Err(e) => tracing::error!("serving a DNS listener: {e}"),
                    }
                }
                Some(Command::Close(index)) => {
                    if let Some(tasks) = served.remove(&index) {
                        tasks.iter().for_each(JoinHandle::abort);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                ticks = ticks.wrapping_add(1);
                let now = Arc::as_ptr(&shared.engine()) as usize;
                let changed = now != engine;
                engine = now;
                let resolver = resolver.clone();
                resolver.housekeeping(ticks.is_multiple_of(WINDOW), changed);
            }
            _ = shared.stopped() => break,
        }
    }
    for tasks in served.into_values() {
        tasks.iter().for_each(JoinHandle::abort);
    }
    resolver.housekeeping(true, false);
}

fn serve_listener(
    resolver: &Arc<Resolver>,
    listener: Listener,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let agent = Arc::new(listener.agent);
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let connections = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    let mut tasks = Vec::new();
    for udp in [Some(listener.udp4), listener.udp6].into_iter().flatten() {
        let socket = Arc::new(UdpSocket::from_std(udp)?);
        tasks.push(tokio::spawn(serve_udp(
            resolver.clone(),
            agent.clone(),
            socket,
            in_flight.clone(),
        )));
    }
    for tcp in [Some(listener.tcp4), listener.tcp6].into_iter().flatten() {
        let socket = TcpListener::from_std(tcp)?;
        tasks.push(tokio::spawn(serve_tcp(
            resolver.clone(),
            agent.clone(),
            socket,
            connections.clone(),
        )));
    }
    Ok(tasks)
}

async fn serve_udp(
    resolver: Arc<Resolver>,
    agent: Arc<AgentRef>,
    socket: Arc<UdpSocket>,
    in_flight: Arc<Semaphore>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::warn!(agent = %agent.name, "DNS listener: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue; // as many queries wait upstream as may: this one is dropped
        };
        let query = buf[..n].to_vec();
        let (resolver, agent, socket) = (resolver.clone(), agent.clone(), socket.clone());
        let mut answering = Box::pin(async move {
            let _permit = permit;
            if let Some(reply) = resolver.answer(&agent, &query, Transport::Udp).await {
                send_udp(&socket, &reply, peer).await;
            }
        });
        // What needs no waiting (a cache hit, a refusal) is answered here and now, before the
        // next datagram is read; only what waits (upstream, an approval, a commit) goes on
        // as a task of its own.
        if poll_once(answering.as_mut()).await.is_pending() {
            tokio::spawn(answering);
        }
    }
}

/// Polls `future` once, in the calling task. A future left pending may be polled again
/// elsewhere (it registers the waker of whichever task polls it next).
async fn poll_once(future: Pin<&mut (impl Future<Output = ()> + ?Sized)>) -> Poll<()> {
    let mut future = Some(future);
    std::future::poll_fn(|cx| {
        Poll::Ready(
            future
                .take()
                .map_or(Poll::Ready(()), |future| future.poll(cx)),
        )
    })
    .await
}

async fn send_udp(socket: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(reply, peer).await {
        tracing::debug!("DNS answer to {peer}: {e}");
    }
}

async fn serve_tcp(
    resolver: Arc<Resolver>,
    agent: Arc<AgentRef>,
    listener: TcpListener,
    connections: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(agent = %agent.name, "DNS listener (TCP): {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (resolver, agent) = (resolver.clone(), agent.clone());
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(&resolver, &agent, stream).await;
        });
    }
}

/// Length-prefixed queries on one connection, answered in order, until the client closes it,
/// idles, or has asked [`TCP_QUERIES`].
async fn serve_connection(resolver: &Resolver, agent: &AgentRef, mut stream: TcpStream) {
    for _ in 0..TCP_QUERIES {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(reply) = resolver.answer(agent, &query, Transport::Tcp).await else {
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
