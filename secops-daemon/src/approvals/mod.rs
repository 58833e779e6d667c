//! The approval queue: every `escalate` opens a ticket (or joins the open one for the same
//! agent, action type and object), and a human approves or denies it. An approval is a grant
//! with an expiry: while it runs, the same escalation is answered `allow`. Grants only ever
//! turn `escalate` into `allow`; a `deny` (hard rules among them) is never looked up here.

mod store;

pub use store::{
    Decided, NewTicket, Ticket, TicketError, TicketStatus, TicketStore, MAX_COMMAND_CHARS,
};

/// Where the tickets live, next to the audit log.
pub fn db_path(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("approvals.db")
}

/// The default and the longest time an approval lasts.
pub const DEFAULT_GRANT: std::time::Duration = std::time::Duration::from_secs(10 * 60);
pub const MAX_GRANT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `decided_by` of tickets the timeout policy closed, so people and tools can tell them from a
/// human's decision.
pub const TIMEOUT_DECIDER: &str = "timeout policy";
