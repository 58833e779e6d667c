//! The control socket's server side.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::Shared;
use crate::control::{Request, Response, MAX_LINE_BYTES};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket with mode 0660 and group `gid`. A stale socket file (nobody listening)
/// is replaced; a live one means another daemon is running, which is an error.
pub fn bind(path: &Path, gid: u32) -> anyhow::Result<UnixListener> {
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
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    std::os::unix::fs::chown(path, Some(0), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, shared))
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("request timed out")))
                    {
                        tracing::debug!("control connection: {e:#}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accepting a control connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, shared: Arc<Shared>) -> anyhow::Result<()> {
    let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid());
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_LINE_BYTES as u64 + 1);
    reader.read_until(b'\n', &mut line).await?;
    let response = if line.len() > MAX_LINE_BYTES {
        Response::Error {
            message: format!("request longer than {MAX_LINE_BYTES} bytes"),
        }
    } else {
        match serde_json::from_slice::<Request>(&line) {
            Ok(request) => respond(request, peer_pid, &shared).await,
            Err(e) => Response::Error {
                message: format!("malformed request: {e}"),
            },
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// Whether `pid` runs inside the secops root cgroup, i.e. is (part of) an agent.
fn is_agent_process(pid: i32, shared: &Shared) -> bool {
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    match crate::cgroups::process_cgroup(pid) {
        // /proc/<pid>/cgroup names the cgroup relative to the cgroup2 mount.
        Ok(cgroup) => shared
            .root
            .mount()
            .join(cgroup.strip_prefix("/").unwrap_or(&cgroup))
            .starts_with(shared.root.path()),
        // A process we cannot place is treated as an agent: refusing is the safe side.
        Err(_) => true,
    }
}

async fn respond(request: Request, peer_pid: Option<i32>, shared: &Arc<Shared>) -> Response {
    match request {
        Request::Status => Response::Status(shared.status()),
        Request::Register { agent } => {
            if peer_pid.is_none_or(|pid| is_agent_process(pid, shared)) {
                tracing::warn!(?peer_pid, %agent, "refused: an agent process asked to register an agent");
                return Response::Error {
                    message: "refused: processes inside an agent cgroup cannot start agents".into(),
                };
            }
            let slot = shared.agent_slot(&agent);
            match slot {
                Some(slot) if slot.in_policy => {
                    if !slot.cgroup.exists() {
                        // Someone removed it since the last sync: make it (and its map entry) again.
                        let s = shared.clone();
                        if let Err(e) = tokio::task::spawn_blocking(move || s.resync())
                            .await
                            .unwrap_or_else(|e| Err(anyhow::anyhow!(e)))
                        {
                            return Response::Error {
                                message: format!("recreating the cgroup of agent {agent}: {e:#}"),
                            };
                        }
                    }
                    let slot = shared.agent_slot(&agent);
                    match slot {
                        Some(slot) => Response::Registered {
                            agent,
                            cgroup: slot.cgroup,
                            cgroup_id: slot.cgroup_id,
                        },
                        None => Response::Error {
                            message: format!("agent {agent} vanished during registration"),
                        },
                    }
                }
                _ => Response::Error {
                    message: format!("the policy defines no agent named {agent:?}"),
                },
            }
        }
        Request::Reload => {
            let s = shared.clone();
            match tokio::task::spawn_blocking(move || s.reload()).await {
                Ok(Ok(files)) => Response::Reloaded {
                    policy_files: files,
                },
                Ok(Err(e)) => Response::Error {
                    message: format!("{e:#}"),
                },
                Err(e) => Response::Error {
                    message: format!("reload failed: {e}"),
                },
            }
        }
    }
}
