//! Everything `secops daemon` can be told (the command line builds these; `cli/daemon.rs`).

use std::path::PathBuf;
use std::time::Duration;

/// Everything `secops daemon` can be told.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub policy: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// The group that may use the socket (mode 0660): admins, and the users agents run as.
    pub socket_gid: u32,
    /// Callers outside every agent cgroup with this group (or root) are admins.
    pub admin_gid: u32,
    pub api: ApiLimits,
    /// A loopback address to serve `/metrics` on, besides the socket.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The bpffs directory for pinned programs and maps.
    pub pin_dir: PathBuf,
    /// The secops root cgroup's name, directly below the cgroup2 mount.
    pub cgroup_root: String,
    pub ring_buffer_bytes: u32,
    /// How often the policy files are checked for changes.
    pub watch_interval: Duration,
    /// How soon a host name in an allowlist that did not resolve is tried again (resolved
    /// names are refreshed when their TTL runs out).
    pub host_refresh: Duration,
}

/// The API's limits; `secops daemon --help` names the flags.
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    /// Largest body of every route but `/v1/scan`.
    pub max_body_bytes: usize,
    /// Largest `/v1/scan` body (tool output can be long).
    pub max_scan_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 512,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 64 << 10,
            max_scan_bytes: 16 << 20,
        }
    }
}
