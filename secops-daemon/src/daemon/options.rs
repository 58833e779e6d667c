//! Everything `secops daemon` can be told (the command line builds these; `cli/daemon.rs`).

use std::path::PathBuf;
use std::time::Duration;

/// Everything `secops daemon` can be told.
#[derive(Clone, Debug)]
pub(crate) struct DaemonOptions {
    pub(crate) policy: PathBuf,
    pub(crate) state_dir: PathBuf,
    pub(crate) socket: PathBuf,
    /// The group that may use the socket (mode 0660): admins, and the users agents run as.
    pub(crate) socket_gid: u32,
    /// Callers outside every agent cgroup with this group (or root) are admins.
    pub(crate) admin_gid: u32,
    pub(crate) api: ApiLimits,
    /// The notifications file (webhooks); none when it does not exist.
    pub(crate) notifications: PathBuf,
    /// A loopback address to serve `/metrics` on, besides the socket.
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    /// The bpffs directory for pinned programs and maps.
    pub(crate) pin_dir: PathBuf,
    /// The secops root cgroup's name, directly below the cgroup2 mount.
    pub(crate) cgroup_root: String,
    pub(crate) ring_buffer_bytes: u32,
    /// How often the policy files are checked for changes.
    pub(crate) watch_interval: Duration,
    /// How soon a host name in an allowlist that did not resolve is tried again (resolved
    /// names are refreshed when their TTL runs out).
    pub(crate) host_refresh: Duration,
    /// Where audit checkpoints are also sent.
    pub(crate) audit_witnesses: Vec<crate::audit::witness::WitnessSpec>,
}

/// The API's limits; `secops daemon --help` names the flags. How the connection limits
/// share the API between callers: `daemon/http/admission.rs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApiLimits {
    /// Connections served at once for everyone but the admins, together.
    pub(crate) max_connections: usize,
    /// Connections served at once for one agent (or one non-admin uid).
    pub(crate) agent_connections: usize,
    /// Connections of one agent accepted and waiting for a turn; more are refused (429).
    pub(crate) agent_queue: usize,
    /// Connections served at once for the admins, which no agent can take.
    pub(crate) admin_connections: usize,
    /// Requests a second one agent (or non-admin uid) may make; a burst of twice as many.
    pub(crate) agent_rate: u32,
    pub(crate) header_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// Largest body of every route but `/v1/scan`.
    pub(crate) max_body_bytes: usize,
    /// Largest `/v1/scan` body (tool output can be long).
    pub(crate) max_scan_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 512,
            agent_connections: 64,
            agent_queue: 1024,
            admin_connections: 32,
            agent_rate: 5000,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 64 << 10,
            max_scan_bytes: 16 << 20,
        }
    }
}
