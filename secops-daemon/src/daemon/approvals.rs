//! Deciding a ticket. Every decision, a human's through the API or the timeout policy's, goes
//! through [`Shared::decide_ticket`], so whatever must follow a decision (the audit record,
//! metrics, the kernel grants of an approval, waking the syscalls parked on it) happens in one
//! place and cannot be skipped by a new caller.

use crate::approvals::{Decided, Ticket, TicketError};
use crate::audit::{AuditError, AuditObject, AuditWriter, NewRecord, ObjectKind, Source};
use crate::time::{format_ns, now_ns};
use secops_common::Verdict;

use super::{lock, Shared};

/// Who decided, as the ticket and the audit record name them.
#[derive(Clone, Debug)]
pub struct Decider {
    /// `decided_by` on the ticket and in the record's reason: a caller's description, or
    /// [`crate::approvals::TIMEOUT_DECIDER`].
    pub name: String,
    /// The deciding process, when a process decided (none for the timeout policy).
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub comm: Option<String>,
}

impl Decider {
    /// The daemon itself, applying the timeout policy.
    pub fn timeout_policy() -> Decider {
        Decider {
            name: crate::approvals::TIMEOUT_DECIDER.to_owned(),
            pid: None,
            uid: None,
            comm: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No such ticket, not open any more, or the queue cannot be read or written.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// The ticket is decided but the log will not take the record.
    #[error("the audit log is not accepting records; no decision is given")]
    NotQueued,
    #[error("the decision could not be recorded: {0}")]
    NotRecorded(AuditError),
}

impl Shared {
    /// Decides an open ticket: records the decision in the queue, audits it (source
    /// `approval`) and waits for that record's commit, and counts it. Returns the decided
    /// ticket. Blocking (SQLite, and the commit): call it from a blocking thread.
    ///
    /// This is the only way a ticket gets decided; anything a decision must set off belongs
    /// here, after the record is committed.
    pub fn decide_ticket(
        &self,
        writer: &AuditWriter,
        id: u64,
        decision: Decided,
        by: &Decider,
        reason: Option<&str>,
    ) -> Result<Ticket, DecideError> {
        let now = now_ns();
        let ticket = lock(&self.tickets).decide(id, &decision, &by.name, reason, now)?;
        let (verdict, word) = match decision {
            Decided::Approve { .. } => (Verdict::Allow, "approved"),
            Decided::Deny => (Verdict::Deny, "denied"),
        };
        // Before anyone can act on the approval (a parked call continuing, an agent
        // retrying), the kernel holds its grant.
        let kernel_note = match decision {
            Decided::Approve { .. } => self.install_grants(&ticket),
            Decided::Deny => String::new(),
        };
        let once = if ticket.grant_once { ", one use" } else { "" };
        let until = ticket
            .grant_until_ns
            .map(|t| format!(" until {}{once}", format_ns(t)))
            .unwrap_or_default();
        let because = ticket
            .decision_reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let record = NewRecord {
            agent: Some(ticket.agent.clone()),
            pid: by.pid,
            uid: by.uid,
            comm: by.comm.clone(),
            object: (!ticket.object.is_empty()).then(|| AuditObject {
                kind: ObjectKind::Target,
                value: ticket.object.clone(),
            }),
            rule_id: ticket.rule_id.clone(),
            ..NewRecord::new(
                now,
                &ticket.action,
                verdict,
                ticket.risk,
                format!(
                    "ticket #{id} {word} by {}{until}{kernel_note}{because}",
                    by.name
                ),
                Source::Approval,
            )
        };
        // A decision the log does not hold is not reported as made: the caller hears of the
        // failure (the queue already says decided; the log is the one that must not lie).
        let committed = writer.append(record);
        if !committed.queued() {
            return Err(DecideError::NotQueued);
        }
        committed.wait().map_err(DecideError::NotRecorded)?;
        self.decided.publish(ticket.id, ticket.status);
        self.metrics
            .decision(Source::Approval, verdict, &ticket.action, &ticket.agent);
        Ok(ticket)
    }
}
