//! The daemon's control socket: a Unix socket speaking one JSON object per line, used by the
//! launcher (`secops run`) and the CLI (`secops status`). The HTTP API for agent frameworks
//! (issue 6) replaces this framing; the messages stay.

pub mod client;
pub mod protocol;

pub use protocol::{AgentStatus, CapabilityStatus, EventCounters, Request, Response, StatusReport};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/secops/secops.sock";

/// A request or response line longer than this is refused, so a client cannot make the
/// daemon buffer without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
