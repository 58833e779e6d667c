//! The one decision path. Every door — kernel events, `/v1/check`, parked syscalls, ticket
//! decisions (a human's or the timeout policy's), and the doors to come — turns what it saw
//! into a [`Request`] and hands it here, and gets one [`Outcome`] back. The steps, in order,
//! each written once:
//!
//! 1. **judge**: the engine's decision on the action (a ticket decision brings its own), and
//!    from it, by the door's [`Door`], the verdict that holds and the reason: what the kernel
//!    did for kernel events, the engine's verdict for the API and parked calls;
//! 2. **escalate**: an escalation meets a human's approval still running (doors whose
//!    verdict the engine holds) or opens or joins a ticket, with the door as its source;
//! 3. **record**: one complete audit record, built once, with the door as its typed source;
//! 4. **account**: the record queued for the audit writer (a door that must not act on a
//!    decision the log does not have learns that it was refused), the decision counted in the
//!    metrics, a denial counted towards the agent's `auto_lower` threshold;
//! 5. **lower**: the agent's autonomy lowered, audited, when that denial reached it.
//!
//! Steps 1, 3 and 4 never block. Steps 2 and 5 do (SQLite, recompiling the kernel maps), so
//! the API thread runs them on the blocking pool ([`decide_async`]); the other doors run on
//! threads of their own and call [`decide`].

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use secops_common::{CoreAction, RiskLevel, Verdict};

use super::control::ControlError;
use super::metrics::Metrics;
use super::process::command_line;
use super::state::{lock, Shared};
use crate::api::action::ResolvedAction;
use crate::api::AutonomyChange;
use crate::approvals::{NewTicket, TicketError, TicketStore};
use crate::audit::{AuditObject, AuditWriter, CommitTicket, NewRecord, ObjectKind, Source};
use crate::enforce::BUILTIN_RULE_ID;
use crate::engine::{Decision, Engine};
use crate::notify::{EventKind, TicketEvent};
use crate::scan::{redact, Category, Scanner};
use crate::time::now_ns;

/// What the decision path needs from the daemon: the engine in force, the approval queue, the
/// metrics, and the denial windows with the lowering they can set off. [`Shared`] is the
/// daemon's; the unit tests have their own, over a real queue and audit log.
pub(crate) trait Context: Send + Sync + 'static {
    fn engine(&self) -> Arc<Engine>;
    /// The output scanner, which every record passes before it is stored.
    fn scanner(&self) -> &Scanner;
    fn tickets(&self) -> MutexGuard<'_, TicketStore>;
    fn metrics(&self) -> &Metrics;
    /// Counts a denial of `agent`; true when it reaches the agent's `auto_lower` threshold.
    fn note_denial(&self, agent: &str) -> bool;
    /// Lowers `agent` one step, in the engine and the kernel. Blocking.
    fn auto_lower(&self, agent: &str) -> Result<Option<AutonomyChange>, ControlError>;
    /// Tells the people watching that a ticket was opened or decided. Never blocks.
    fn notify(&self, event: TicketEvent);
}

impl Context for Shared {
    fn engine(&self) -> Arc<Engine> {
        Shared::engine(self)
    }

    fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    fn tickets(&self) -> MutexGuard<'_, TicketStore> {
        lock(&self.tickets)
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn note_denial(&self, agent: &str) -> bool {
        Shared::note_denial(self, agent)
    }

    fn auto_lower(&self, agent: &str) -> Result<Option<AutonomyChange>, ControlError> {
        Shared::auto_lower(self, agent)
    }

    fn notify(&self, event: TicketEvent) {
        self.notifier.send(&event);
    }
}

/// The door a request came through, and what that door means for the verdict.
#[derive(Clone, Debug)]
pub(crate) enum Door {
    /// `/v1/check` (and `secops check`): the engine's verdict is the answer.
    Api,
    /// A syscall parked by a `secops run --ask` filter: the engine's verdict continues or
    /// fails it. A call that continues is audited by the kernel layer it continues into, so
    /// an allowed one gets no record here. `can_wait`: the agent has room for one more call
    /// waiting for a human; without it an escalation is refused.
    Parked { can_wait: bool },
    /// An event the kernel reported: the kernel already acted. `verdict` is what it did.
    Kernel {
        verdict: Verdict,
        check: KernelCheck,
    },
    /// A decision on a ticket; the decision is the decider's, not the engine's.
    Ticket(Decision),
    /// A query to the daemon's DNS resolver (the kernel sends the agent's port-53 traffic to
    /// the listener that names it). The engine decides the name (`net:dns`); what holds is
    /// answered: an allowed name is resolved upstream, anything else refused and never
    /// forwarded.
    Dns(DnsQuery),
}

/// What the DNS door knows about a query beyond its name.
#[derive(Clone, Debug)]
pub(crate) struct DnsQuery {
    /// The query type as DNS names it (`A`, `AAAA`, `TXT`, ...).
    pub(crate) qtype: String,
    /// Whether the policy lets this type be asked about the name: A and AAAA, and the types
    /// the name's allowlist entries add. A type it does not allow is refused even for an
    /// allowed name, and never escalated (a human cannot tell a TXT query from a tunnel).
    pub(crate) type_allowed: bool,
    /// The rule id behind a refused type.
    pub(crate) type_rule: String,
    /// Room for one more ticket from this agent's DNS now; without it an escalation is
    /// refused like a denial, so a flood of made-up names cannot flood the approval queue.
    pub(crate) may_ask: bool,
    /// The same decision (agent, name, type, verdict) was recorded already in this window:
    /// it is counted (metrics) and recorded with its repeats when the window closes.
    pub(crate) repeat: bool,
}

/// Which kernel layer acted on a kernel event.
#[derive(Clone, Debug)]
pub(crate) enum KernelCheck {
    /// A syscall tracepoint: it only observes (what it reports has happened or is about to).
    Tracepoint,
    /// A syscall tracepoint saw a call the agent's Landlock ruleset refuses (judged from the
    /// ruleset `secops run` applied: the tracepoint sees the call's entry, not its result).
    Landlock,
    /// A cgroup connect/sendmsg program judging by the egress allowlist.
    Egress,
    /// A BPF LSM program judging by a compiled entry. `rule` is the entry's rule; `None` for
    /// the built-in checks (bpf(), ptrace and signals to secops, cgroup files).
    Lsm { rule: Option<Arc<str>> },
    /// A BPF program let the action through on a human's approval (a `secops_grants` entry).
    Granted,
    /// A cgroup connect/sendmsg program denied an agent addressing one of the daemon's DNS
    /// listeners itself (they are reached only through the redirect of port 53).
    DnsListener,
}

impl Door {
    pub(crate) fn source(&self) -> Source {
        match self {
            Door::Api => Source::Api,
            Door::Parked { .. } => Source::Parked,
            Door::Kernel { .. } => Source::Kernel,
            Door::Ticket(_) => Source::Approval,
            Door::Dns(_) => Source::Dns,
        }
    }

    /// Whether the engine's verdict is what happens, so a human's running approval can turn
    /// an escalation into an allow here (the kernel checks its own grants).
    fn engine_holds_the_verdict(&self) -> bool {
        matches!(self, Door::Api | Door::Parked { .. } | Door::Dns(_))
    }

    /// Whether a denial through this door is the agent's doing (and counts towards
    /// `auto_lower`); a human denying a ticket is not, and neither is a resolver library
    /// asking again what was just refused (one act, retried).
    fn counts_denials(&self) -> bool {
        !matches!(self, Door::Ticket(_)) && !self.is_repeat()
    }

    /// A decision already recorded in this window, recorded later with its repeats.
    fn is_repeat(&self) -> bool {
        matches!(self, Door::Dns(q) if q.repeat)
    }
}

/// Who acted. Identity comes from the kernel (a cgroup, a peer's credentials, a notification's
/// pid), never from what a request says about itself.
#[derive(Clone, Debug, Default)]
pub(crate) struct Actor {
    pub(crate) agent: Option<String>,
    pub(crate) cgroup_id: Option<u64>,
    pub(crate) pid: Option<u32>,
    pub(crate) tgid: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) comm: Option<String>,
    pub(crate) exe: Option<String>,
}

/// What a door hands to the decision path.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) door: Door,
    /// UTC, nanoseconds: when the action happened (the kernel's stamp) or was asked about.
    pub(crate) at_ns: i64,
    pub(crate) actor: Actor,
    /// The action, with the values the engine decides on.
    pub(crate) action: ResolvedAction,
    /// The object as the audit log shows it.
    pub(crate) object: Option<AuditObject>,
    /// The file an approval of an escalation would grant, as the kernel numbers it.
    pub(crate) inode: Option<(u32, u64)>,
    /// What the door saw beyond the action (argv, `unlink`, an LSM check's name), given in
    /// parentheses after the reason.
    pub(crate) detail: String,
    /// What the record adds after the reason (a tool and its arguments); not in the answer.
    pub(crate) note: String,
}

/// A judged request: everything the record and the answer say.
#[derive(Clone, Debug)]
pub(crate) struct Judged {
    pub(crate) request: Request,
    /// The engine's decision (or the ticket's decider's).
    pub(crate) decision: Decision,
    /// What holds: the kernel's verdict, the engine's, or an approval's allow.
    pub(crate) verdict: Verdict,
    pub(crate) rule_id: Option<String>,
    /// The reason as answered; the record adds the request's note.
    pub(crate) reason: String,
    /// The ticket an escalation opened or joined.
    pub(crate) ticket: Option<u64>,
    /// The approval that let an escalation through.
    pub(crate) granted_by: Option<u64>,
}

/// How a door wants its record handed to the audit writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuditMode {
    /// Queued in order; nobody waits for the commit, unless the writer already holds as
    /// many unawaited records as a crash may lose (then it is [`Recorded::Committing`]).
    Enqueue,
    /// Queued with a [`CommitTicket`] the door waits on (alone, or with a batch's others).
    Commit,
}

/// What became of the record.
pub(crate) enum Recorded {
    /// Nothing to record: a parked call that continues is audited by the kernel; a DNS repeat
    /// is recorded with the others when its window closes.
    NotNeeded,
    Queued,
    Committing(CommitTicket),
    /// The audit writer did not take it: the door must not act on the decision.
    Refused,
}

/// The decision path's answer to a door.
pub(crate) struct Outcome {
    pub(crate) judged: Judged,
    pub(crate) recorded: Recorded,
}

impl Outcome {
    pub(crate) fn verdict(&self) -> Verdict {
        self.judged.verdict
    }
}

/// Step 1: the engine's decision and what holds by the door. Pure; never blocks.
pub(crate) fn judge(engine: &Engine, request: Request) -> Judged {
    let decision = match &request.door {
        Door::Ticket(decision) => decision.clone(),
        _ => {
            let agent = request
                .actor
                .agent
                .as_deref()
                .and_then(|a| engine.agent_index(a));
            engine.decide(&request.action.request(agent))
        }
    };
    let (verdict, rule_id, reason) = outcome_by_door(&request, &decision);
    Judged {
        request,
        decision,
        verdict,
        rule_id,
        reason,
        ticket: None,
        granted_by: None,
    }
}

/// The verdict, rule and reason of a decision, as the door makes it happen.
fn outcome_by_door(request: &Request, decision: &Decision) -> (Verdict, Option<String>, String) {
    let rule = decision.rule_id.as_deref().map(str::to_owned);
    let detail = &request.detail;
    let with_detail = |reason: String| {
        if detail.is_empty() {
            reason
        } else {
            format!("{reason} ({detail})")
        }
    };
    let kernel_verdict = match &request.door {
        Door::Api | Door::Ticket(_) => {
            return (decision.verdict, rule, decision.reason.to_string());
        }
        Door::Parked { can_wait } => {
            let (verdict, reason) = match decision.verdict {
                Verdict::Deny => (
                    Verdict::Deny,
                    format!(
                        "refused before the call ran (secops run --ask): {}",
                        decision.reason
                    ),
                ),
                Verdict::Escalate if !can_wait => (
                    Verdict::Deny,
                    format!(
                        "refused: as many calls of this agent as may wait for a human \
                         already do (secops run --ask); the policy says escalate: {}",
                        decision.reason
                    ),
                ),
                Verdict::Escalate => (
                    Verdict::Escalate,
                    format!(
                        "parked until a human decides (secops run --ask): {}",
                        decision.reason
                    ),
                ),
                Verdict::Allow => (
                    Verdict::Allow,
                    format!("continued (secops run --ask): {}", decision.reason),
                ),
            };
            return (verdict, rule, reason);
        }
        Door::Dns(query) => return dns_outcome(query, decision),
        Door::Kernel { verdict, check } => (*verdict, check),
    };
    match kernel_verdict {
        (Verdict::Allow, KernelCheck::Lsm { rule: entry_rule }) => {
            // Allowed by the entry's rule, or (no entry decided) by no rule at all: the record
            // names the rule that allowed it, never the built-in protection's.
            let rule = entry_rule.as_deref().map(str::to_owned).or(rule);
            (
                Verdict::Allow,
                rule,
                format!("allowed by BPF LSM ({detail})"),
            )
        }
        (verdict, KernelCheck::Lsm { rule: entry_rule }) => {
            // The compiled entry's rule; for the built-in checks, the policy's rule for the
            // action if one denies it.
            let rule = match (entry_rule, &decision.rule_id, decision.verdict) {
                (Some(r), _, _) => r.to_string(),
                (None, Some(id), Verdict::Deny) => id.to_string(),
                (None, _, _) => BUILTIN_RULE_ID.to_owned(),
            };
            let reason = match verdict {
                Verdict::Escalate => {
                    format!("denied by BPF LSM until a human approves, rule {rule} ({detail})")
                }
                _ => format!("denied by BPF LSM, rule {rule} ({detail})"),
            };
            (verdict, Some(rule), reason)
        }
        (_, KernelCheck::DnsListener) => (
            Verdict::Deny,
            Some(format!(
                "egress.{}.dns-listener",
                request.actor.agent.as_deref().unwrap_or("unknown")
            )),
            "denied in the kernel: a DNS listener of secops, which an agent reaches only \
             through port 53 (one agent may not speak for another)"
                .to_owned(),
        ),
        (_, KernelCheck::Landlock) => {
            // The rule that protects the path; none for secops' own files (built in).
            let rule = match decision.verdict {
                Verdict::Allow => BUILTIN_RULE_ID.to_owned(),
                _ => rule.unwrap_or_else(|| BUILTIN_RULE_ID.to_owned()),
            };
            let why = match decision.verdict {
                Verdict::Escalate => format!(
                    "the policy says escalate, which this layer denies (a Landlock domain \
                     cannot be widened, so no approval can let it through): {}",
                    decision.reason
                ),
                Verdict::Deny => decision.reason.to_string(),
                Verdict::Allow => "secops' own files".to_owned(),
            };
            (
                Verdict::Deny,
                Some(rule.clone()),
                with_detail(format!(
                    "denied by Landlock, rule {rule} (the agent's ruleset grants no right for this \
                     call on this path; judged from the ruleset at the call's entry): {why}"
                )),
            )
        }
        (_, KernelCheck::Granted) => (
            Verdict::Allow,
            rule,
            format!(
                "allowed by a human's approval in the kernel ({detail}; the policy says {}: {})",
                decision.verdict, decision.reason
            ),
        ),
        (Verdict::Deny, KernelCheck::Egress) => match decision.verdict {
            // The kernel only knows addresses: a host name in the allowlist that does not
            // resolve to this address, for one, is denied there.
            Verdict::Allow => (
                Verdict::Deny,
                Some(format!(
                    "egress.{}.kernel",
                    request.actor.agent.as_deref().unwrap_or("unknown")
                )),
                format!(
                    "not in the kernel's egress allowlist (the policy engine would allow: {})",
                    decision.reason
                ),
            ),
            // Denied now; a ticket opens, and its approval becomes a kernel grant.
            Verdict::Escalate => (
                Verdict::Escalate,
                rule,
                with_detail(format!(
                    "denied in the kernel until a human approves: {}",
                    decision.reason
                )),
            ),
            Verdict::Deny => (
                Verdict::Deny,
                rule,
                with_detail(decision.reason.to_string()),
            ),
        },
        (Verdict::Deny, _) => (
            Verdict::Deny,
            rule,
            with_detail(decision.reason.to_string()),
        ),
        (_, _) if decision.verdict == Verdict::Allow => (
            Verdict::Allow,
            rule,
            with_detail(decision.reason.to_string()),
        ),
        // Where the kernel only observed, the record says what happened (allow) and what the
        // policy would have decided, so nobody reads an unenforced deny as enforced. The rule
        // is named in the reason, not as the record's rule: `allow ... rule=X` would read as
        // allowed by X.
        (_, _) => {
            let would = match &decision.rule_id {
                Some(id) => format!("rule {id} would {}", decision.verdict),
                None => format!("the policy would {}", decision.verdict),
            };
            (
                Verdict::Allow,
                None,
                with_detail(format!(
                    "observed only, NOT blocked (no synchronous enforcement for this on this \
                     kernel): {would}: {}",
                    decision.reason
                )),
            )
        }
    }
}

/// What the DNS door does with the engine's decision on a name: answer it, or refuse it.
fn dns_outcome(query: &DnsQuery, decision: &Decision) -> (Verdict, Option<String>, String) {
    let rule = decision.rule_id.as_deref().map(str::to_owned);
    let qtype = &query.qtype;
    if decision.verdict != Verdict::Deny && !query.type_allowed {
        return (
            Verdict::Deny,
            Some(query.type_rule.clone()),
            format!(
                "refused, not forwarded: the policy does not allow {qtype} queries for this name \
                 (A and AAAA for allowed names, and the types their entries list)"
            ),
        );
    }
    match decision.verdict {
        Verdict::Allow => (
            Verdict::Allow,
            rule,
            format!("{qtype} answered: {}", decision.reason),
        ),
        Verdict::Deny => (
            Verdict::Deny,
            rule,
            format!("{qtype} refused, not forwarded: {}", decision.reason),
        ),
        Verdict::Escalate if !query.may_ask => (
            Verdict::Deny,
            rule,
            format!(
                "{qtype} refused, not forwarded: as many names of this agent as may wait for a \
                 human already do; the policy says escalate: {}",
                decision.reason
            ),
        ),
        Verdict::Escalate => (
            Verdict::Escalate,
            rule,
            format!(
                "{qtype} refused until a human approves the name: {}",
                decision.reason
            ),
        ),
    }
}

impl Judged {
    /// Whether step 2 has work to do.
    pub(crate) fn escalates(&self) -> bool {
        self.verdict == Verdict::Escalate && self.request.actor.agent.is_some()
    }

    /// The object an escalation's ticket and an approval name.
    fn ticket_object(&self) -> &str {
        self.request
            .object
            .as_ref()
            .map_or("", |o| o.value.as_str())
    }

    /// The record of `count` more decisions like this one between `first_ns` and `last_ns`
    /// (UTC), which a door aggregated instead of recording each (`repeat` requests).
    pub(crate) fn repeats_record(
        &self,
        count: u64,
        first_ns: i64,
        last_ns: i64,
        detail: &str,
    ) -> NewRecord {
        let mut record = self.record();
        record.ts_ns = last_ns;
        record.reason.push_str(&format!(
            "; {count} more between {} and {} (aggregated){}",
            crate::time::format_ns(first_ns),
            crate::time::format_ns(last_ns),
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ));
        record
    }

    /// Step 3: the one record of this decision.
    pub(crate) fn record(&self) -> NewRecord {
        let r = &self.request;
        let mut reason = self.reason.clone();
        if let Some(id) = self.ticket {
            reason.push_str(&format!("; approval ticket {id}"));
        }
        reason.push_str(&r.note);
        NewRecord {
            ts_ns: r.at_ns,
            agent: r.actor.agent.clone(),
            cgroup_id: r.actor.cgroup_id,
            pid: r.actor.pid,
            tgid: r.actor.tgid,
            uid: r.actor.uid,
            comm: r.actor.comm.clone(),
            exe: r.actor.exe.clone(),
            action: r.action.action_name.clone(),
            object: r.object.clone(),
            verdict: self.verdict,
            risk: self.decision.risk,
            rule_id: self.rule_id.clone(),
            reason,
            source: r.door.source(),
        }
    }
}

/// Step 2: an escalation meets a running approval, or opens (or joins) a ticket. Blocking.
/// A queue that cannot be read or written is an error: the door decides what that means
/// (the API gives no answer; a parked call is refused; a kernel event is recorded without a
/// ticket).
pub(crate) fn escalate(ctx: &impl Context, judged: &mut Judged) -> Result<(), TicketError> {
    let Some(agent) = judged.request.actor.agent.clone() else {
        return Ok(());
    };
    let action = judged.request.action.action_name.clone();
    let object = judged.ticket_object().to_owned();
    let now = now_ns();
    // Read before the queue is locked: /proc is not the queue's business.
    let command = command_line(judged.request.actor.pid);
    let mut tickets = ctx.tickets();
    if judged.request.door.engine_holds_the_verdict() {
        if let Some(t) = tickets.use_grant(&agent, &action, &object, now)? {
            judged.verdict = Verdict::Allow;
            judged.granted_by = Some(t.id);
            judged.reason = format!(
                "approved in ticket #{} by {} (the policy says escalate: {})",
                t.id,
                t.decided_by.as_deref().unwrap_or("a human"),
                judged.reason
            );
            return Ok(());
        }
    }
    let (id, joined) = tickets.escalated(&NewTicket {
        agent: &agent,
        action: &action,
        object: &object,
        risk: judged.decision.risk,
        rule_id: judged.decision.rule_id.as_deref(),
        reason: &judged.decision.reason,
        source: judged.request.door.source(),
        now_ns: now,
        object_inode: judged.request.inode,
        command: command.as_deref(),
    })?;
    // A new ticket is announced once, here, whichever door opened it.
    let opened = (!joined).then(|| tickets.get(id));
    drop(tickets);
    match opened {
        Some(Ok(ticket)) => {
            ctx.metrics().ticket_opened(judged.request.door.source());
            ctx.notify(TicketEvent {
                kind: EventKind::Opened,
                ticket,
            });
        }
        Some(Err(e)) => tracing::error!(ticket = id, "reading the ticket just opened: {e}"),
        None => {}
    }
    judged.ticket = Some(id);
    Ok(())
}

/// Steps 3 and 4. Never blocks. Returns the outcome, and whether the agent's denials just
/// reached its `auto_lower` threshold (then [`lower`] follows).
pub(crate) fn account(
    ctx: &impl Context,
    writer: &AuditWriter,
    judged: Judged,
    mode: AuditMode,
    started: Instant,
) -> (Outcome, bool) {
    let door = &judged.request.door;
    let recorded = if (matches!(door, Door::Parked { .. }) && judged.verdict == Verdict::Allow)
        || door.is_repeat()
    {
        Recorded::NotNeeded
    } else {
        let mut record = judged.record();
        let found = redact_record(ctx.scanner(), &mut record);
        if !found.is_empty() {
            ctx.metrics().redacted(&found);
        }
        let commit = |record| match writer.append(record) {
            ticket if ticket.queued() => Recorded::Committing(ticket),
            _ => Recorded::Refused,
        };
        match mode {
            AuditMode::Enqueue if writer.accepting() => match writer.enqueue(record) {
                true => Recorded::Queued,
                false => Recorded::Refused,
            },
            // Past the bound on what a crash could lose of unawaited records, this one is
            // awaited instead: the door waits for its commit rather than being refused.
            AuditMode::Enqueue if writer.health().failing.is_none() => commit(record),
            AuditMode::Enqueue => Recorded::Refused,
            AuditMode::Commit => commit(record),
        }
    };
    let source = door.source();
    let agent = judged.request.actor.agent.as_deref();
    let metrics = ctx.metrics();
    if !matches!(door, Door::Ticket(_)) {
        metrics.latency(source, started.elapsed());
    }
    metrics.decision(
        source,
        judged.verdict,
        &judged.request.action.action_name,
        agent.unwrap_or(""),
    );
    let lower = judged.verdict == Verdict::Deny
        && door.counts_denials()
        && agent.is_some_and(|a| ctx.note_denial(a));
    (Outcome { judged, recorded }, lower)
}

/// What an agent wrote (argv, paths, tool arguments) can hold a credential: the record's
/// texts pass the output scanner's redaction before they are stored, and the reason says
/// what was redacted (the categories and counts, never the text). Returns the counts.
pub(crate) fn redact_record(
    scanner: &Scanner,
    record: &mut NewRecord,
) -> BTreeMap<Category, usize> {
    let mut found = BTreeMap::new();
    let mut clean = |text: &mut String| {
        let findings = scanner.scan(text);
        if findings.is_empty() {
            return;
        }
        for (category, n) in Scanner::count(&findings) {
            *found.entry(category).or_insert(0) += n;
        }
        // Offsets that do not fit the text are the scanner's bug: nothing of it is kept.
        *text = redact(text, &findings)
            .unwrap_or_else(|_| "[REDACTED: the scanner could not place its findings]".into());
    };
    clean(&mut record.reason);
    if let Some(object) = record.object.as_mut() {
        clean(&mut object.value);
    }
    if let Some(exe) = record.exe.as_mut() {
        clean(exe);
    }
    if !found.is_empty() {
        let counts: Vec<String> = found.iter().map(|(c, n)| format!("{n} {c}")).collect();
        record.reason.push_str(&format!(
            "; redacted before it was stored: {}",
            counts.join(", ")
        ));
    }
    found
}

/// Step 5: lowers the agent one step after its denials reached the threshold, and audits
/// the change (its source is the door of the denial that reached it). Blocking.
pub(crate) fn lower(ctx: &impl Context, writer: &AuditWriter, judged: &Judged) {
    let Some(agent) = judged.request.actor.agent.as_deref() else {
        return;
    };
    match ctx.auto_lower(agent) {
        Ok(Some(change)) => {
            let record = NewRecord {
                agent: Some(change.agent.clone()),
                cgroup_id: judged.request.actor.cgroup_id,
                object: Some(autonomy_object()),
                ..NewRecord::new(
                    now_ns(),
                    CoreAction::SysAutonomy.as_str(),
                    Verdict::Allow,
                    RiskLevel::High,
                    format!(
                        "autonomy {} -> {}, set by secops (automatic): {}",
                        change.from, change.to, change.reason
                    ),
                    judged.request.door.source(),
                )
            };
            if !writer.enqueue(record) {
                tracing::error!(
                    agent,
                    "the audit log refused the record of an automatic lowering"
                );
            }
        }
        Ok(None) => {}
        // The denial stands and is audited; failing to lower must not undo it, but it must be
        // loud.
        Err(e) => tracing::error!("lowering the autonomy of {agent} after repeated denials: {e}"),
    }
}

/// What an autonomy record is about.
pub(crate) fn autonomy_object() -> AuditObject {
    AuditObject {
        kind: ObjectKind::Target,
        value: "autonomy".to_owned(),
    }
}

/// The whole path, for doors on threads of their own (the kernel pipeline, parked calls,
/// ticket decisions). A ticket queue that fails is logged and the record says so; a parked
/// call's door refuses an escalation that has no ticket.
pub(crate) fn decide(
    ctx: &impl Context,
    writer: &AuditWriter,
    request: Request,
    mode: AuditMode,
) -> Outcome {
    let started = Instant::now();
    let mut judged = judge(&ctx.engine(), request);
    if judged.escalates() {
        if let Err(e) = escalate(ctx, &mut judged) {
            tracing::error!(
                source = %judged.request.door.source(),
                "opening an approval ticket: {e}"
            );
            judged
                .reason
                .push_str(&format!("; no approval ticket: {e}"));
        }
    }
    let (outcome, lower_now) = account(ctx, writer, judged, mode, started);
    if lower_now {
        lower(ctx, writer, &outcome.judged);
    }
    outcome
}

/// Why the API path gives no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoAnswer {
    #[error("{0}; no decision is given")]
    Tickets(#[from] TicketError),
    #[error("the audit log is not accepting records; no decision is given")]
    NotRecorded,
    #[error("the decision could not be recorded: {0}")]
    CommitFailed(crate::audit::AuditError),
    #[error("a blocking step of the decision did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The whole path for the API thread: the blocking steps run on the blocking pool, and a
/// `durable` request waits (without holding the thread) for its record's commit, whose seq
/// it returns.
pub(crate) async fn decide_async<C: Context>(
    ctx: &Arc<C>,
    writer: &Arc<AuditWriter>,
    request: Request,
    durable: bool,
) -> Result<(Outcome, Option<u64>), NoAnswer> {
    let started = Instant::now();
    let mut judged = judge(&ctx.engine(), request);
    if judged.escalates() {
        let s = ctx.clone();
        judged =
            tokio::task::spawn_blocking(move || escalate(s.as_ref(), &mut judged).map(|()| judged))
                .await??;
    }
    let mode = if durable {
        AuditMode::Commit
    } else {
        AuditMode::Enqueue
    };
    let (mut outcome, lower_now) = account(ctx.as_ref(), writer, judged, mode, started);
    let seq = match std::mem::replace(&mut outcome.recorded, Recorded::Queued) {
        Recorded::Refused => return Err(NoAnswer::NotRecorded),
        Recorded::Committing(ticket) => Some(
            tokio::task::spawn_blocking(move || ticket.wait())
                .await?
                .map_err(NoAnswer::CommitFailed)?,
        ),
        Recorded::Queued | Recorded::NotNeeded => None,
    };
    if lower_now {
        // Answered only once the lowering is in force, so the agent's next request is
        // already decided at the lower level.
        let (c, w, judged) = (ctx.clone(), writer.clone(), outcome.judged.clone());
        tokio::task::spawn_blocking(move || lower(c.as_ref(), &w, &judged)).await?;
    }
    Ok((outcome, seq))
}

#[cfg(test)]
mod tests;
