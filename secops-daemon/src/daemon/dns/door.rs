//! One query, from the listener it reached to its answer, through the one decision path:
//! the engine judges the name (`net:dns`), the door refuses what is not allowed (never
//! forwarding it), resolves what is (cache, else the agent's upstreams), records the decision
//! before the agent gets the answer, and puts the answer's addresses into the agent's
//! `secops_egress_names` entries for the name's ports and the answer's TTL.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use secops_common::{CoreAction, Verdict};

use super::listeners::AgentRef;
use super::window::{Noted, Window};
use super::{DnsCounters, DnsLayer};
use crate::api::action::ResolvedAction;
use crate::audit::AuditWriter;
use crate::daemon::decide::{
    account, escalate, judge, lower, Actor, AuditMode, DnsQuery, Door, Judged, Recorded, Request,
};
use crate::daemon::state::{lock, Shared};
use crate::dns::cache::AnswerCache;
use crate::dns::message::{Chain, Question, Transport};
use crate::dns::upstream::Pool;
use crate::enforce::{clamp_ttl, name_dns_types, name_ports, NameChange, NameGrant, ResolvedNames};
use crate::kernel::NamesMap;
use crate::policy::DnsRefusal;
use crate::time::{boot_now_ns, now_ns};

/// How long one upstream resolver gets to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers kept.
const CACHE_ENTRIES: usize = 50_000;

/// What the door's queries share (one thread serves them all: the lock is never contended
/// for long and never held across an await).
struct State {
    cache: AnswerCache,
    names: ResolvedNames,
    window: Window,
    map: NamesMap,
    counters: DnsCounters,
}

pub(crate) struct Resolver {
    shared: Arc<Shared>,
    writer: Arc<AuditWriter>,
    state: Mutex<State>,
    upstream: Pool,
}

/// What became of an allowed name upstream.
struct Resolved {
    chain: Option<Chain>,
    age: u32,
    failure: Option<String>,
}

impl Resolver {
    pub(crate) fn new(shared: Arc<Shared>, writer: Arc<AuditWriter>, map: NamesMap) -> Resolver {
        Resolver {
            shared,
            writer,
            state: Mutex::new(State {
                cache: AnswerCache::new(CACHE_ENTRIES),
                names: ResolvedNames::default(),
                window: Window::default(),
                map,
                counters: DnsCounters::default(),
            }),
            upstream: Pool::default(),
        }
    }

    fn dns(&self) -> &DnsLayer {
        &self.shared.dns
    }

    /// The reply to one message from `agent` (none for messages that get no reply).
    pub(crate) async fn answer(
        &self,
        agent: &AgentRef,
        bytes: &[u8],
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let started = Instant::now();
        let question = match Question::read(bytes) {
            Ok(q) => q,
            Err(unanswerable) => {
                lock(&self.state).counters.unanswerable += 1;
                tracing::debug!(agent = %agent.name, "DNS message not answered: {}", unanswerable.why);
                return unanswerable.reply;
            }
        };
        let engine = self.shared.engine();
        let policy = engine.policy().clone();
        let egress = policy.egress.get(&agent.name);
        let qtype = u16::from(question.qtype);
        let type_allowed = matches!(question.qtype, RecordType::A | RecordType::AAAA)
            || egress.is_some_and(|e| name_dns_types(e, &question.name).contains(&qtype));
        let may_ask = lock(&self.state).window.may_ask(agent.index);
        let mut action = ResolvedAction::core(CoreAction::NetDns);
        action.host = Some(question.name.clone());
        let request = Request {
            door: Door::Dns(DnsQuery {
                qtype: question.qtype.to_string(),
                type_allowed,
                type_rule: format!("egress.{}.dns-types", agent.name),
                may_ask,
                repeat: false,
            }),
            at_ns: now_ns(),
            actor: Actor {
                agent: Some(agent.name.clone()),
                cgroup_id: Some(agent.cgroup_id),
                ..Actor::default()
            },
            object: action.audit_object(),
            action,
            inode: None,
            detail: String::new(),
            note: String::new(),
        };
        let mut judged = judge(&engine, request);
        if judged.escalates() {
            judged = self.escalate(agent, judged).await;
        }

        let refusal = match egress.map(|e| e.dns_refusal) {
            Some(DnsRefusal::NxDomain) => ResponseCode::NXDomain,
            _ => ResponseCode::Refused,
        };
        let allowed = judged.verdict == Verdict::Allow;
        let resolved = if allowed {
            let upstreams = self.dns().upstreams(&policy, &agent.name);
            Some(self.resolve(&upstreams, &question).await)
        } else {
            None
        };
        let addresses: Vec<String> = resolved
            .as_ref()
            .and_then(|r| r.chain.as_ref())
            .map(|c| c.addresses.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        if let Some(r) = &resolved {
            // Known only now, after the decision: what the record adds to its reason.
            judged.request.note = format!(" ({})", describe(r, &addresses));
        }

        let noted = lock(&self.state).window.note(
            agent.index,
            &question.name,
            qtype,
            judged.verdict,
            judged.request.at_ns,
            &addresses,
        );
        if noted != Noted::First {
            if let Door::Dns(q) = &mut judged.request.door {
                q.repeat = true;
            }
        }
        let (outcome, lower_now) = account(
            self.shared.as_ref(),
            &self.writer,
            judged,
            AuditMode::Enqueue,
            started,
        );
        if lower_now {
            let (shared, writer, judged) = (
                self.shared.clone(),
                self.writer.clone(),
                outcome.judged.clone(),
            );
            let _ =
                tokio::task::spawn_blocking(move || lower(shared.as_ref(), &writer, &judged)).await;
        }
        // Queued is what the path asks of a door that answers at once; past the writer's bound
        // on unawaited records the record is handed back to wait for (the answer waits too).
        let recorded = match outcome.recorded {
            Recorded::Queued | Recorded::NotNeeded => true,
            Recorded::Refused => false,
            Recorded::Committing(ticket) => matches!(
                tokio::task::spawn_blocking(move || ticket.wait()).await,
                Ok(Ok(_))
            ),
        };
        let judged = outcome.judged;
        {
            let mut state = lock(&self.state);
            match noted {
                Noted::First => state
                    .window
                    .recorded(agent.index, &question.name, qtype, &judged),
                Noted::Overflow => state.window.overflowed(agent.index, &judged),
                Noted::Repeat => {}
            }
            if !recorded {
                // The log does not have the decision: the agent gets nothing it allowed.
                tracing::error!(agent = %agent.name, "the audit log refused a DNS decision; answering SERVFAIL");
                return Some(question.reply(ResponseCode::ServFail));
            }
            if !allowed {
                state.counters.refused += 1;
                return Some(question.reply(refusal));
            }
        }
        let resolved = resolved?;
        let Some(chain) = resolved.chain else {
            lock(&self.state).counters.upstream_failures += 1;
            return Some(question.reply(ResponseCode::ServFail));
        };
        if let Some(egress) = egress {
            self.allow_addresses(agent, &question.name, &chain, resolved.age, egress);
        }
        lock(&self.state).counters.answered += 1;
        let (answers, authorities) = chain.aged(resolved.age);
        Some(question.answer(chain.rcode, &answers, &authorities, transport))
    }

    /// Step 2 of the path, on the blocking pool (SQLite): a running approval lets the name
    /// through, or a ticket opens (at most a few per window per agent).
    async fn escalate(&self, agent: &AgentRef, judged: Judged) -> Judged {
        let shared = self.shared.clone();
        let mut fallback = judged.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut judged = judged;
            escalate(shared.as_ref(), &mut judged).map(|()| judged)
        })
        .await;
        match result {
            Ok(Ok(judged)) => {
                if judged.ticket.is_some() {
                    lock(&self.state).window.ticket_opened(agent.index);
                }
                judged
            }
            Ok(Err(e)) => {
                fallback
                    .reason
                    .push_str(&format!("; no approval ticket: {e}"));
                fallback
            }
            Err(e) => {
                fallback
                    .reason
                    .push_str(&format!("; no approval ticket: {e}"));
                fallback
            }
        }
    }

    /// The answer for an allowed question: cached, else from the upstreams.
    async fn resolve(
        &self,
        upstreams: &Arc<[std::net::SocketAddr]>,
        question: &Question,
    ) -> Resolved {
        let qtype = u16::from(question.qtype);
        let now = Instant::now();
        if let Some(hit) = lock(&self.state)
            .cache
            .get(upstreams, &question.name, qtype, now)
        {
            return Resolved {
                chain: Some(hit.chain),
                age: hit.age,
                failure: None,
            };
        }
        match self
            .upstream
            .ask(
                upstreams,
                &question.dns_name,
                question.qtype,
                UPSTREAM_TIMEOUT,
            )
            .await
        {
            Ok(response) => {
                let chain = Chain::of(&response, &question.dns_name, question.qtype);
                if matches!(chain.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
                    lock(&self.state).cache.insert(
                        upstreams,
                        &question.name,
                        qtype,
                        chain.clone(),
                        Instant::now(),
                    );
                }
                Resolved {
                    chain: Some(chain),
                    age: 0,
                    failure: None,
                }
            }
            Err(e) => Resolved {
                chain: None,
                age: 0,
                failure: Some(e.to_string()),
            },
        }
    }

    /// The answer's addresses become the agent's, for the name's ports, until the answer's
    /// TTL (clamped) runs out; the kernel entry is written before the agent gets the answer.
    fn allow_addresses(
        &self,
        agent: &AgentRef,
        name: &str,
        chain: &Chain,
        age: u32,
        egress: &crate::policy::Egress,
    ) {
        let ports = name_ports(egress, name);
        if ports.is_empty() || chain.addresses.is_empty() {
            return;
        }
        let ttl = clamp_ttl(chain.ttl.saturating_sub(age));
        let expires_ns = boot_now_ns().saturating_add(ttl.as_nanos() as u64);
        let mut state = lock(&self.state);
        let changes: Vec<NameChange> = chain
            .addresses
            .iter()
            .filter_map(|&addr| {
                state.names.insert(
                    agent.index,
                    addr,
                    name,
                    NameGrant {
                        ports: ports.clone(),
                        expires_ns,
                    },
                )
            })
            .collect();
        apply(&mut state.map, &changes);
    }

    /// Once a second: expired names forgotten (the kernel stopped honouring them already),
    /// names the policy no longer allows taken back, and every `close_every` calls the audit
    /// window closed.
    pub(crate) fn housekeeping(&self, close_window: bool, policy_changed: bool) {
        let engine = self.shared.engine();
        let records = {
            let mut state = lock(&self.state);
            let mut changes = state.names.sweep(boot_now_ns());
            if policy_changed {
                let policy = engine.policy();
                let agents = self.shared.agent_names_by_index();
                changes.extend(state.names.reconcile(|agent, name| {
                    let egress = policy.egress.get(agents.get(&agent)?)?;
                    Some(name_ports(egress, name))
                }));
            }
            apply(&mut state.map, &changes);
            state.counters.resolved_addresses = state.names.len();
            state.counters.cache = state.cache.counts();
            self.dns().set_counters(state.counters);
            if close_window {
                state.window.close()
            } else {
                Vec::new()
            }
        };
        for record in records {
            if !self.writer.enqueue(record) {
                tracing::error!("the audit log refused an aggregated DNS record");
            }
        }
    }
}

fn apply(map: &mut NamesMap, changes: &[NameChange]) {
    for (key, value) in changes {
        let result = match value {
            Some(v) => map.set(key, v),
            None => map.remove(key),
        };
        if let Err(e) = result {
            tracing::error!("updating the addresses names resolved to: {e}");
        }
    }
}

/// What the record says an allowed query got.
fn describe(resolved: &Resolved, addresses: &[String]) -> String {
    match (&resolved.chain, &resolved.failure) {
        (Some(chain), _) if !addresses.is_empty() => format!(
            "-> {} (TTL {} s{})",
            addresses.join(", "),
            chain.ttl.saturating_sub(resolved.age),
            if resolved.age > 0 { ", cached" } else { "" }
        ),
        (Some(chain), _) if chain.rcode == ResponseCode::NXDomain => "no such name".to_owned(),
        (Some(chain), _) => format!("{} record(s), no addresses", chain.answers.len()),
        (None, Some(failure)) => format!("no answer upstream: {failure}; SERVFAIL"),
        (None, None) => String::new(),
    }
}
