//! Approval tickets as table rows, for `approvals list` and `approvals watch`.

use crate::approvals::{Ticket, TIMEOUT_DECIDER};

/// How long ago `ns` was, for a person: `42s`, `5m`, `3h`, `2d`.
pub(super) fn age(ns: i64, now_ns: i64) -> String {
    let secs = (now_ns - ns).max(0) / 1_000_000_000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The table's header, aligned with [`ticket_row`].
pub(super) const HEADER: &str =
    "ID     STATUS             AGE   AGENT        RISK      ACTION          \
     OBJECT                     COMMAND";

/// One ticket as one line (the command last, cut to fit `width` characters when given).
pub(super) fn ticket_row(t: &Ticket, now_ns: i64, width: Option<usize>) -> String {
    // A decision nobody made must not read like a human's.
    let status = if t.decided_by.as_deref() == Some(TIMEOUT_DECIDER) {
        format!("{} (timed out)", t.status)
    } else {
        t.status.to_string()
    };
    let object = if t.object.is_empty() { "-" } else { &t.object };
    let mut row = format!(
        "#{:<5} {:<18} {:<5} {:<12} {:<9} {:<15} {:<26} {}",
        t.id,
        status,
        age(t.first_seen_ns, now_ns),
        t.agent,
        t.risk.as_str(),
        t.action,
        object,
        t.command.as_deref().unwrap_or("-"),
    );
    if let Some(width) = width {
        if row.chars().count() > width {
            row = row.chars().take(width.saturating_sub(1)).collect();
            row.push('…');
        }
    }
    row
}
