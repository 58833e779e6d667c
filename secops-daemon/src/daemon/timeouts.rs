//! The timeout policy: once a second, tickets nobody decided within `approvals.timeout` are
//! closed with the decision `approvals.on_timeout` gives their risk, through the same
//! [`Shared::decide_ticket`] as a human's decision (so each is audited, source `approval`,
//! decided by "timeout policy"). The policy in force at each sweep decides: a reload changes
//! the timeout for tickets already open.
//!
//! Its own OS thread, not a tokio task: it runs SQLite and waits for audit commits, and the
//! daemon joins it on shutdown before the audit writer is closed.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use secops_common::{AutonomyLevel, RiskLevel};

use super::approvals::{DecideError, Decider};
use super::state::{lock, Shared};
use crate::approvals::{Decided, Ticket, TicketError, DEFAULT_GRANT};
use crate::audit::AuditWriter;
use crate::policy::{Approvals, OnTimeout};
use crate::time::now_ns;

/// How often the queue is swept; the policy's shortest timeout is this.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Tickets closed per risk tier and sweep; the rest wait for the next sweep, so a flood of
/// expired tickets cannot hold the queue's lock for long.
const SWEEP_BATCH: usize = 256;

pub(crate) struct Sweeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

pub(crate) fn spawn(shared: Arc<Shared>, writer: Arc<AuditWriter>) -> anyhow::Result<Sweeper> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("secops-timeouts".into())
        .spawn(move || loop {
            match stopped.recv_timeout(SWEEP_EVERY) {
                Err(RecvTimeoutError::Timeout) => {}
                // Stopped (the sender is dropped) or told to stop.
                _ => return,
            }
            match sweep(&shared, &writer, now_ns()) {
                Ok(0) => {}
                Ok(closed) => tracing::info!(closed, "timeout policy closed tickets"),
                Err(e) => tracing::error!("timeout policy: {e}; trying again in a second"),
            }
        })
        .context("starting the approval timeout thread")?;
    Ok(Sweeper {
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Sweeper {
    /// Stops the thread after the sweep it may be in; blocks until it has.
    pub(crate) fn stop(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Closes every ticket whose timeout ran out by `now_ns` (up to a batch per tier); returns how
/// many it closed.
fn sweep(shared: &Shared, writer: &AuditWriter, now_ns: i64) -> Result<usize, DecideError> {
    let engine = shared.engine();
    let approvals = &engine.policy().approvals;
    let timeout_ns = i64::try_from(approvals.timeout.as_nanos()).unwrap_or(i64::MAX);
    let opened_by = now_ns.saturating_sub(timeout_ns);
    let mut closed = 0;
    for risk in RiskLevel::ALL {
        if approvals.on_timeout(risk) == OnTimeout::Wait {
            continue;
        }
        // The lock is released before deciding: decide_ticket takes it again.
        let expired = lock(&shared.tickets).expired(risk, opened_by, SWEEP_BATCH)?;
        for ticket in expired {
            let autonomy = shared
                .agent_slot(&ticket.agent)
                .filter(|slot| slot.in_policy)
                .map(|slot| slot.autonomy);
            let (decision, reason) = timeout_decision(&ticket, approvals, autonomy);
            match shared.decide_ticket(
                writer,
                ticket.id,
                decision,
                &Decider::timeout_policy(),
                Some(&reason),
            ) {
                Ok(_) => closed += 1,
                // A human decided it since it was read: theirs stands.
                Err(DecideError::Ticket(TicketError::NotOpen { .. })) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(closed)
}

/// What the timeout policy decides for an expired ticket, and the reason the ticket and the
/// audit record give. `autonomy` is the agent's now (`None`: the policy no longer defines
/// it). An `allow` is an approval nobody gave, so it is refused to agents that must not act
/// without a human (`locked`) and to agents the policy dropped.
fn timeout_decision(
    ticket: &Ticket,
    approvals: &Approvals,
    autonomy: Option<AutonomyLevel>,
) -> (Decided, String) {
    let rule = approvals.on_timeout(ticket.risk);
    let said = format!(
        "no human decided within {}; the timeout policy for {} risk says {}",
        humantime::format_duration(approvals.timeout),
        ticket.risk,
        rule.as_str()
    );
    match (rule, autonomy) {
        (OnTimeout::Allow, Some(level)) if level != AutonomyLevel::Locked => (
            Decided::Approve {
                grant: DEFAULT_GRANT,
                once: false,
            },
            format!("{said} (for {})", humantime::format_duration(DEFAULT_GRANT)),
        ),
        (OnTimeout::Allow, Some(_)) => (
            Decided::Deny,
            format!(
                "{said}, but agent {} is locked (it does nothing without a human), so deny",
                ticket.agent
            ),
        ),
        (OnTimeout::Allow, None) => (
            Decided::Deny,
            format!(
                "{said}, but the policy no longer defines agent {}, so deny",
                ticket.agent
            ),
        ),
        // `wait` tickets are never swept; one that got here is treated as the default.
        (OnTimeout::Deny | OnTimeout::Wait, _) => (Decided::Deny, said),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::TicketStatus;

    fn ticket(risk: RiskLevel) -> Ticket {
        Ticket {
            id: 7,
            agent: "web".into(),
            action: "deploy:release".into(),
            object: "prod".into(),
            risk,
            rule_id: Some("ask".into()),
            reason: "ask first".into(),
            source: crate::audit::Source::Api,
            status: TicketStatus::Open,
            first_seen_ns: 1,
            last_seen_ns: 1,
            count: 1,
            decided_by: None,
            decided_at_ns: None,
            decision_reason: None,
            grant_until_ns: None,
            grant_once: false,
            object_inode: None,
            command: None,
        }
    }

    fn policy() -> Approvals {
        use OnTimeout::*;
        Approvals::new(Duration::from_secs(600), [Allow, Deny, Deny, Wait])
    }

    #[test]
    fn each_tier_gets_its_decision_and_the_reason_says_timeout() {
        let (decided, reason) = timeout_decision(
            &ticket(RiskLevel::Low),
            &policy(),
            Some(AutonomyLevel::Semi),
        );
        assert!(
            matches!(decided, Decided::Approve { grant, once: false } if grant == DEFAULT_GRANT)
        );
        assert_eq!(
            reason,
            "no human decided within 10m; the timeout policy for low risk says allow (for 10m)"
        );
        let (decided, reason) = timeout_decision(
            &ticket(RiskLevel::High),
            &policy(),
            Some(AutonomyLevel::Full),
        );
        assert!(matches!(decided, Decided::Deny));
        assert_eq!(
            reason,
            "no human decided within 10m; the timeout policy for high risk says deny"
        );
    }

    #[test]
    fn allow_is_never_given_to_a_locked_or_vanished_agent() {
        let (decided, reason) = timeout_decision(
            &ticket(RiskLevel::Low),
            &policy(),
            Some(AutonomyLevel::Locked),
        );
        assert!(matches!(decided, Decided::Deny));
        assert!(reason.ends_with("agent web is locked (it does nothing without a human), so deny"));
        let (decided, reason) = timeout_decision(&ticket(RiskLevel::Low), &policy(), None);
        assert!(matches!(decided, Decided::Deny));
        assert!(reason.contains("no longer defines agent web"), "{reason}");
    }
}
