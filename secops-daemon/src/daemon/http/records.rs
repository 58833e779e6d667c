//! Audit records the API writes itself, beyond decisions (which the decision path records):
//! refusals of callers who may not do what they asked, the kill switch, autonomy changes, scans.

use secops_common::{RiskLevel, Verdict};

use super::error::ApiError;
use super::identity::Caller;
use super::ApiState;
use crate::audit::NewRecord;
use crate::audit::Source;
use crate::time::now_ns;

/// `text` cut to `max_chars` characters, with an ellipsis when it was longer.
pub(super) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A record about what `caller` did through the API.
pub(super) fn api_record(
    caller: &Caller,
    action: &str,
    verdict: Verdict,
    risk: RiskLevel,
    reason: String,
) -> NewRecord {
    let actor = caller.actor();
    NewRecord {
        agent: actor.agent,
        cgroup_id: actor.cgroup_id,
        pid: actor.pid,
        uid: actor.uid,
        comm: actor.comm,
        ..NewRecord::new(now_ns(), action, verdict, risk, reason, Source::Api)
    }
}

/// Queues a record and, if asked, waits for its commit. A record that cannot be queued means
/// no answer: the caller must not act on a decision the log does not have.
pub(super) async fn audit_record(
    state: &ApiState,
    record: NewRecord,
    durable: bool,
) -> Result<Option<u64>, ApiError> {
    let refused =
        || ApiError::unavailable("the audit log is not accepting records; no decision is given");
    if !durable {
        return if state.writer.enqueue(record) {
            Ok(None)
        } else {
            Err(refused())
        };
    }
    let ticket = state.writer.append(record);
    if !ticket.queued() {
        return Err(refused());
    }
    let seq = tokio::task::spawn_blocking(move || ticket.wait())
        .await?
        .map_err(|e| ApiError::unavailable(format!("the decision could not be recorded: {e}")))?;
    Ok(Some(seq))
}
