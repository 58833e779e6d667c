//! The daemon's HTTP/JSON API on its Unix socket (`/v1/...`): the message types, the one
//! translation of an action description into an engine request, and the blocking client the
//! CLI and the launcher use. The server is in `daemon::http`; the OpenAPI document is
//! `secops-daemon/api/openapi.yaml`.

pub mod action;
pub mod client;
pub mod types;

pub use types::{
    ActionObject, AgentStatus, AskAccepted, AskRequest, AuditLogStatus, AuditWitnessStatus,
    AutonomyChange, AutonomyOverride, CapabilityStatus, CheckRequest, CheckResponse,
    ControlRequest, DnsAgentStatus, DnsStatus, ErrorBody, EventCounters, KernelDenials,
    LandlockPath, LandlockPlan, Registered, Reloaded, Role, RunAs, ScanRequest, ScanResponse,
    SetAutonomyRequest, StatusReport, StopAll, Whoami, MAX_SUMMARY_CHARS, MAX_WAIT,
};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/secops/secops.sock";
