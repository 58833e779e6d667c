//! Deciding a ticket. Every decision, a human's through the API or the timeout policy's, goes
//! through [`Shared::decide_ticket`], so whatever must follow a decision (the audit record,
//! metrics, the kernel grants of an approval, waking the syscalls parked on it) happens in one
//! place and cannot be skipped by a new caller. The record itself is the decision path's
//! (`decide.rs`, door `Ticket`), like every other door's.

use std::sync::Arc;

use secops_common::Verdict;

use super::decide::{decide, Actor, AuditMode, Door, Recorded, Request};
use super::state::{lock, Shared};
use crate::api::action::ResolvedAction;
use crate::approvals::{Decided, Ticket, TicketError};
use crate::audit::{AuditError, AuditObject, AuditWriter, ObjectKind};
use crate::enforce::{grant_keys, grant_value, granted_endpoint};
use crate::engine::Decision;
use crate::notify::{EventKind, TicketEvent};
use crate::time::{format_ns, now_ns, Clock};

/// Who decided, as the ticket and the audit record name them.
#[derive(Clone, Debug)]
pub(crate) struct Decider {
    /// `decided_by` on the ticket and in the record's reason: a caller's description, or
    /// [`crate::approvals::TIMEOUT_DECIDER`].
    pub(crate) name: String,
    /// The deciding process, when a process decided (none for the timeout policy).
    pub(crate) pid: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) comm: Option<String>,
}

impl Decider {
    /// The daemon itself, applying the timeout policy.
    pub(crate) fn timeout_policy() -> Decider {
        Decider {
            name: crate::approvals::TIMEOUT_DECIDER.to_owned(),
            pid: None,
            uid: None,
            comm: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DecideError {
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
    pub(crate) fn decide_ticket(
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
        let request = Request {
            door: Door::Ticket(Decision {
                verdict,
                risk: ticket.risk,
                rule_id: ticket.rule_id.as_deref().map(Arc::from),
                reason: Arc::from(format!(
                    "ticket #{id} {word} by {}{until}{kernel_note}{because}",
                    by.name
                )),
            }),
            at_ns: now,
            actor: Actor {
                agent: Some(ticket.agent.clone()),
                pid: by.pid,
                uid: by.uid,
                comm: by.comm.clone(),
                ..Actor::default()
            },
            action: ResolvedAction::named(&ticket.action),
            object: (!ticket.object.is_empty()).then(|| AuditObject {
                kind: ObjectKind::Target,
                value: ticket.object.clone(),
            }),
            inode: ticket.object_inode,
            detail: String::new(),
            note: String::new(),
        };
        // A decision the log does not hold is not reported as made: the caller hears of the
        // failure (the queue already says decided; the log is the one that must not lie).
        match decide(self, writer, request, AuditMode::Commit).recorded {
            Recorded::Committing(committed) => {
                committed.wait().map_err(DecideError::NotRecorded)?;
            }
            _ => return Err(DecideError::NotQueued),
        }
        self.decided.publish(ticket.id, ticket.status);
        self.metrics
            .ticket_decided(ticket.status, by.name == crate::approvals::TIMEOUT_DECIDER);
        self.notifier.send(&TicketEvent {
            kind: EventKind::Decided,
            ticket: ticket.clone(),
        });
        Ok(ticket)
    }
}

impl Shared {
    /// Installs the kernel grants of an approved ticket. Returns what the decision's audit
    /// record adds: which grant the kernel got, or why it got none (the approval still lets
    /// the API path through).
    fn install_grants(&self, ticket: &Ticket) -> String {
        let Some(slot) = self.agent_slot(&ticket.agent) else {
            return format!("; no kernel grant: no agent {} is running", ticket.agent);
        };
        let keys = match grant_keys(ticket, slot.index) {
            Ok(keys) => keys,
            Err(why) => return format!("; no kernel grant ({why})"),
        };
        let value = grant_value(ticket, &Clock::now());
        let mut kernel = lock(&self.kernel);
        for key in &keys {
            if let Err(e) = kernel.maps_mut().grant(key, &value) {
                tracing::error!(ticket = ticket.id, "installing a kernel grant: {e}");
                return format!(
                    "; the kernel grant could not be installed ({e}): the kernel keeps denying"
                );
            }
        }
        let what = match granted_endpoint(&keys[0]) {
            Some(_) => "this destination",
            None => "this file (by inode)",
        };
        let uses = if ticket.grant_once {
            "one use"
        } else {
            "every use until it expires"
        };
        format!("; kernel grant for {what}, {uses}")
    }
}
