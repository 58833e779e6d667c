//! The API server: HTTP/1.1 on the daemon's Unix socket, and optionally `/metrics` alone on a
//! loopback TCP port.
//!
//! Limits, so no caller can crash or stall the daemon: at most `max_connections` served at
//! once (further connections wait in the listen backlog, not in memory), a request's headers
//! must arrive within `header_timeout` (408; also the keep-alive idle limit), a whole request within
//! `request_timeout` (408), bodies up to a per-route size (413). Each connection's caller is
//! placed once, from its peer credentials, when it is accepted.

mod admission;
mod body;
mod control;
mod error;
mod identity;
mod records;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::options::ApiLimits;
use super::state::Shared;
use crate::audit::AuditWriter;
use admission::{Admission, TooMany};
pub(crate) use error::ApiError;
pub(crate) use identity::Caller;
pub use routes::ROUTES as API_ROUTES;

/// What the handlers share.
pub(crate) struct ApiState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) writer: Arc<AuditWriter>,
    pub(crate) limits: ApiLimits,
    pub(crate) admin_gid: u32,
}

/// Binds the socket with mode 0660 and group `gid`. A stale socket file (nobody listening)
/// is replaced; a live one means another daemon is running, which is an error.
pub(crate) fn bind(path: &Path, gid: u32) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another secops daemon is listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("making the API socket non-blocking")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    std::os::unix::fs::chown(path, Some(0), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    Ok(listener)
}

/// Binds the metrics port; only loopback addresses are accepted, since the metrics name
/// agents and what they did.
pub(crate) fn bind_metrics(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    if !addr.ip().is_loopback() {
        anyhow::bail!("--metrics-listen {addr}: only loopback addresses are allowed");
    }
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("--metrics-listen {addr}"))?;
    listener
        .set_nonblocking(true)
        .context("making the metrics socket non-blocking")?;
    Ok(listener)
}

/// The API server's own thread and single-threaded runtime. One thread takes a request from
/// the socket to its answer: at a steady rate of requests every hop to another thread is a
/// wake-up of an idle CPU, which costs more than the request itself.
pub(crate) struct Server {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    pub(crate) fn start(
        listener: std::os::unix::net::UnixListener,
        metrics: Option<std::net::TcpListener>,
        state: Arc<ApiState>,
    ) -> anyhow::Result<Server> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("secops-api-blocking")
            .build()
            .context("starting the API runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("secops-api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match UnixListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("the API socket cannot be served: {e}");
                            return;
                        }
                    };
                    let metrics = metrics.and_then(|m| {
                        TcpListener::from_std(m)
                            .map_err(|e| tracing::error!("the metrics port cannot be served: {e}"))
                            .ok()
                    });
                    let serve_metrics = async {
                        match metrics {
                            Some(m) => serve_metrics(m, state.clone()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = serve(listener, state.clone()) => {}
                        _ = serve_metrics => {}
                        _ = stopped => {}
                    }
                });
                // Connections were dropped with the serve futures; blocking work still
                // running (a scan, a ticket write) gets a moment to finish.
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .context("starting the API thread")?;
        Ok(Server {
            thread: Some(thread),
            stop: Some(stop),
        })
    }

    /// Stops serving: open connections are dropped, and the thread is joined.
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the API thread panicked");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves the API until the task is aborted; aborting it also aborts every connection.
async fn serve(listener: UnixListener, state: Arc<ApiState>) {
    let router = routes::router(state.clone());
    let admission = Arc::new(Admission::new(state.limits));
    let place = |stream: &tokio::net::UnixStream, state: &ApiState| {
        Some(Arc::new(identity::identify(
            stream.peer_cred().ok(),
            &state.shared,
            state.admin_gid,
        )))
    };
    accept_loop(
        async || listener.accept().await.map(|(s, _)| s),
        place,
        router,
        admission,
        state,
    )
    .await;
}

/// Serves `/metrics` (and nothing else) on a loopback TCP port, to anyone who can reach it.
async fn serve_metrics(listener: TcpListener, state: Arc<ApiState>) {
    let router = routes::metrics_router(state.clone());
    let accept = async || listener.accept().await.map(|(s, _)| s);
    // Anyone who can reach the port is one class: a few connections, a short queue.
    let admission = Arc::new(Admission::new(ApiLimits {
        max_connections: 16,
        agent_connections: 16,
        agent_queue: 64,
        agent_rate: 200,
        ..state.limits
    }));
    accept_loop(accept, |_, _| None, router, admission, state).await;
}

/// Accepts connections as fast as they come and serves each on its own task once
/// `admission` gives it its turn (or refuses it with a 429). `place` says who the peer is
/// (None: nobody in particular).
async fn accept_loop<IO>(
    mut accept: impl AsyncFnMut() -> std::io::Result<IO>,
    place: impl Fn(&IO, &ApiState) -> Option<Arc<Caller>>,
    router: Router,
    admission: Arc<Admission>,
    state: Arc<ApiState>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + AsFd + Unpin + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let stream = match accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("accepting an API connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let caller = place(&stream, &state);
        let router = router.clone();
        let limits = state.limits;
        let state = state.clone();
        let admission = admission.clone();
        connections.spawn(async move {
            let turn = match admission.admit(caller.as_deref()).await {
                Ok(turn) => turn,
                Err(TooMany(why)) => {
                    tracing::warn!("API connection refused: {why}");
                    state.shared.metrics.api_response(429);
                    if let Ok(raw) = stream.as_fd().try_clone_to_owned() {
                        answer_and_close(raw, "429 Too Many Requests", &why);
                    }
                    return;
                }
            };
            serve_connection(stream, router, caller, limits, admission, state).await;
            drop(turn);
        });
        // Finished connections are reaped here, so the set holds at most the live ones and
        // one more.
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection<IO>(
    io: IO,
    router: Router,
    caller: Option<Arc<Caller>>,
    limits: ApiLimits,
    admission: Arc<Admission>,
    state: Arc<ApiState>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + AsFd + Unpin + Send + 'static,
{
    // A second handle on the socket, to answer 408 to a client that never finishes its
    // first request's headers (hyper would only close the connection).
    let raw = io.as_fd().try_clone_to_owned().ok();
    let started = Arc::new(AtomicBool::new(false));
    let seen = started.clone();
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        seen.store(true, Ordering::Relaxed);
        if let Some(caller) = &caller {
            request.extensions_mut().insert(caller.clone());
        }
        let router = router.clone();
        let state = state.clone();
        let over_budget = admission.request(caller.as_deref()).err();
        // The routes that may wait for a human get that long on top; their bodies keep the
        // usual limit (the check handler times its body alone).
        let limit = limits.request_timeout
            + if may_wait(&request) {
                crate::api::MAX_WAIT
            } else {
                Duration::ZERO
            };
        async move {
            if let Some(TooMany(why)) = over_budget {
                state.shared.metrics.api_response(429);
                let mut response =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, why).into_response();
                response
                    .headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("1"));
                return Ok::<Response<Body>, Infallible>(response);
            }
            let response =
                match tokio::time::timeout(limit, router.oneshot(request.map(Body::new))).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "the request was not complete within {} ms",
                            limit.as_millis()
                        ),
                    )
                    .into_response(),
                };
            state
                .shared
                .metrics
                .api_response(response.status().as_u16());
            Ok::<Response<Body>, Infallible>(response)
        }
    });
    // hyper's own header timeout closes idle kept-alive connections; it runs a little longer
    // than ours so the first request's timeout is answered with a 408 here.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout + Duration::from_millis(500))
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = &mut connection => result,
        _ = tokio::time::sleep(limits.header_timeout) => {
            if started.load(Ordering::Relaxed) {
                connection.await
            } else {
                if let Some(raw) = raw {
                    let why = format!(
                        "the request headers were not complete within {} ms",
                        limits.header_timeout.as_millis()
                    );
                    answer_and_close(raw, "408 Request Timeout", &why);
                }
                return;
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("API connection: {e}");
    }
}

/// Whether a request is one that can wait for a ticket's decision: a check (whose body may
/// ask for it) or a ticket read (a GET, no body).
fn may_wait<B>(request: &Request<B>) -> bool {
    let path = request.uri().path();
    (request.method() == axum::http::Method::POST && path == "/v1/check")
        || (request.method() == axum::http::Method::GET && path.starts_with("/v1/tickets/"))
}

/// Writes a whole error response on a connection that will not be served (headers that did
/// not come in time, a class over its budget), and shuts it down. The answer is small enough
/// for an empty socket buffer; if it does not fit, the client was not reading anyway.
fn answer_and_close(raw: std::os::fd::OwnedFd, status: &str, why: &str) {
    let body = serde_json::to_string(&crate::api::ErrorBody {
        error: why.to_owned(),
    })
    .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut file = std::fs::File::from(raw);
    let _ = std::io::Write::write_all(&mut file, response.as_bytes());
    // SAFETY: shutdown(2) on a socket descriptor this function owns.
    unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&file), libc::SHUT_RDWR) };
}
