//! The rule engine: a policy compiled into matchers, and one function from an action to a
//! decision.
//!
//! Precedence, in this order:
//! 1. **Hard rules.** If any matches, the verdict is `deny` (hard rules must deny). Nothing
//!    later, no autonomy level and no approval, can change it. They apply to unknown agents too.
//! 2. **Unknown agent or missing object.** An action from no known agent, or one without the
//!    object its type needs (a path for `fs:*`), cannot be classified: `escalate`.
//! 3. **Rules and egress.** Every matching rule gives a verdict: its own, or, where it left
//!    the verdict open, the agent's autonomy applied to its risk. The egress allowlist is one
//!    more such opinion for `net:connect`/`net:send`. The strictest verdict wins
//!    (`deny` > `escalate` > `allow`), then the higher risk, then the earlier rule. So the
//!    order of rules and includes never changes a verdict, and an `allow` rule cannot
//!    override a `deny`; exceptions are written with `unless`.
//! 4. **No rule matched.** The action type's default risk (the policy's `defaults.risk`, a
//!    declared type's `risk`, else the built-in table) through the autonomy matrix. A type
//!    with no default risk cannot be classified: `escalate`.
//! 5. **Locked agents** never get `allow`: it becomes `escalate`.

mod egress;
mod globs;
mod moved;
mod ruleset;
#[doc(hidden)]
pub mod synthetic;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use secops_common::{ActionId, AutonomyLevel, Category, CoreAction, RiskLevel, Verdict};

pub use crate::policy::path::{NormalizedPath, PathError};
pub use moved::MovedPath;

use crate::policy::{EgressDefault, Policy};
use egress::EgressCheck;
use globs::Binding;
use ruleset::{CompiledRule, RuleSet};

/// An agent's index in the engine (stable for one compiled policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AgentIdx(pub u32);

/// One action to decide. The identity (`agent`) is the caller's to establish from the kernel;
/// the engine trusts it as given.
#[derive(Clone, Debug)]
pub struct ActionRequest<'a> {
    pub agent: Option<AgentIdx>,
    pub action: ActionId,
    pub path: Option<&'a NormalizedPath>,
    /// The executable of `proc:exec`.
    pub binary: Option<&'a NormalizedPath>,
    pub addr: Option<IpAddr>,
    pub host: Option<&'a str>,
    pub port: Option<u16>,
}

impl<'a> ActionRequest<'a> {
    pub fn new(agent: Option<AgentIdx>, action: ActionId) -> Self {
        ActionRequest {
            agent,
            action,
            path: None,
            binary: None,
            addr: None,
            host: None,
            port: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub risk: RiskLevel,
    /// The rule that decided; `None` when defaults or the engine itself decided.
    pub rule_id: Option<Arc<str>>,
    pub reason: Arc<str>,
}

/// A decision and the steps that led to it, for people.
#[derive(Clone, Debug)]
pub struct Explanation {
    pub decision: Decision,
    pub steps: Vec<String>,
}

/// What is an agent's own: the rule sets are shared by every agent.
struct AgentContext {
    name: Arc<str>,
    autonomy: AutonomyLevel,
    workspace: String,
    home: Option<String>,
    egress: Option<EgressCheck>,
}

/// A compiled policy. The rules are compiled once, for every agent at once; an agent adds
/// only its name, autonomy, workspace, home and egress allowlist.
pub struct Engine {
    policy: Arc<Policy>,
    agents: Vec<AgentContext>,
    by_name: HashMap<String, AgentIdx>,
    hard: RuleSet,
    regular: RuleSet,
    kinds: Vec<(Category, Option<CoreAction>)>,
    reasons: FixedReasons,
    /// Protected trees that moved since the rules named them: judged under both names.
    moved: moved::MovedPaths,
}

struct FixedReasons {
    unknown_agent: Arc<str>,
    missing_object: Arc<str>,
    unclassified: Arc<str>,
    default_risk: Arc<str>,
    locked: Arc<str>,
}

/// Where a decision's steps go: nowhere on the hot path, into a list for `explain`.
trait Trace {
    fn note(&mut self, step: impl FnOnce() -> String);
}

struct NoTrace;
impl Trace for NoTrace {
    #[inline(always)]
    fn note(&mut self, _: impl FnOnce() -> String) {}
}

impl Trace for Vec<String> {
    fn note(&mut self, step: impl FnOnce() -> String) {
        self.push(step());
    }
}

impl Engine {
    /// Compiles a validated policy.
    pub fn new(policy: Arc<Policy>) -> Engine {
        let mut agents = Vec::with_capacity(policy.agents.len());
        let mut by_name = HashMap::new();
        for (i, agent) in policy.agents.iter().enumerate() {
            let egress = match (policy.egress.get(&agent.name), policy.defaults.egress) {
                (Some(allowlist), _) => Some(EgressCheck::new(&agent.name, allowlist.clone())),
                (None, EgressDefault::Deny) => {
                    Some(EgressCheck::new(&agent.name, Default::default()))
                }
                (None, EgressDefault::Allow) => None,
            };
            agents.push(AgentContext {
                name: Arc::from(agent.name.as_str()),
                autonomy: agent.autonomy,
                workspace: agent.workspace.clone(),
                home: agent.home.clone(),
                egress,
            });
            by_name.insert(agent.name.clone(), AgentIdx(i as u32));
        }
        let context = ruleset::Context {
            action_count: policy.registry.len(),
            agents: &by_name,
            default_homes: &policy.defaults.home_patterns,
        };
        let of_kind = |hard: bool| {
            policy
                .rules
                .iter()
                .enumerate()
                .filter(move |(_, r)| r.hard == hard)
        };
        let hard = RuleSet::compile(of_kind(true), &context);
        let regular = RuleSet::compile(of_kind(false), &context);
        let kinds = policy
            .registry
            .iter()
            .map(|(_, t)| (t.category(), t.as_core()))
            .collect();
        Engine {
            agents,
            by_name,
            hard,
            regular,
            kinds,
            reasons: FixedReasons {
                unknown_agent: Arc::from("the action does not come from a known agent"),
                missing_object: Arc::from("the action lacks the object its type needs (path, binary or address)"),
                unclassified: Arc::from("no rule matched and the action type has no default risk"),
                default_risk: Arc::from("no rule matched; the action type's default risk and the agent's autonomy decided"),
                locked: Arc::from("the agent is locked: nothing is allowed without a human"),
            },
            policy,
            moved: moved::MovedPaths::default(),
        }
    }

    /// Puts in force the moves the daemon found: a path below one is judged at its earlier
    /// name too, and the strictest decision holds.
    pub fn set_moved(&self, moves: Vec<MovedPath>) {
        self.moved.set(moves);
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn agent_index(&self, name: &str) -> Option<AgentIdx> {
        self.by_name.get(name).copied()
    }

    pub fn agent_name(&self, agent: AgentIdx) -> Option<&str> {
        self.agents.get(agent.0 as usize).map(|a| &*a.name)
    }

    /// Decides one action.
    pub fn decide(&self, request: &ActionRequest<'_>) -> Decision {
        self.decide_following_moves(request, &mut NoTrace)
    }

    /// Decides one action and says why, step by step.
    pub fn explain(&self, request: &ActionRequest<'_>) -> Explanation {
        let mut steps = Vec::new();
        let decision = self.decide_following_moves(request, &mut steps);
        Explanation { decision, steps }
    }

    /// The decision for the request's path and for every earlier name of it (a protected
    /// tree that moved): the strictest holds, so a rename of an ancestor loosens nothing.
    fn decide_following_moves(
        &self,
        request: &ActionRequest<'_>,
        trace: &mut impl Trace,
    ) -> Decision {
        let decision = self.decide_traced(request, trace);
        let Some(path) = request.path.or(request.binary) else {
            return decision;
        };
        let Some(moves) = self.moved.get() else {
            return decision;
        };
        let mut best = decision;
        for earlier in moved::earlier_names(&moves, path.as_str()) {
            let Ok(earlier) = NormalizedPath::new(&earlier) else {
                continue;
            };
            trace.note(|| format!("{path} was {earlier} when the rules were put in force"));
            let mut moved_request = request.clone();
            if request.path.is_some() {
                moved_request.path = Some(&earlier);
            } else {
                moved_request.binary = Some(&earlier);
            }
            let other = self.decide_traced(&moved_request, trace);
            if (other.verdict, other.risk) > (best.verdict, best.risk) {
                best = Decision {
                    reason: Arc::from(format!("{} (moved from {earlier})", other.reason)),
                    ..other
                };
            }
        }
        best
    }

    fn decide_traced(&self, request: &ActionRequest<'_>, trace: &mut impl Trace) -> Decision {
        let canonical;
        let request = match request.addr {
            Some(addr) if addr.to_canonical() != addr => {
                canonical = ActionRequest {
                    addr: Some(addr.to_canonical()),
                    ..request.clone()
                };
                trace.note(|| format!("address {addr} is judged as {}", addr.to_canonical()));
                &canonical
            }
            _ => request,
        };
        let Some(&(category, core)) = self.kinds.get(request.action.index()) else {
            trace.note(|| "the action type is not in this policy's registry".to_owned());
            return self.fixed(
                Verdict::Escalate,
                RiskLevel::Critical,
                &self.reasons.unclassified,
            );
        };
        let context = request.agent.and_then(|a| self.agents.get(a.0 as usize));
        // Processes of no known agent: hard rules that name no agent, `~` as the default homes.
        let binding = match (request.agent, context) {
            (Some(idx), Some(c)) => Binding {
                agent: Some(idx.0),
                workspace: Some(&c.workspace),
                home: c.home.as_deref(),
            },
            _ => Binding {
                agent: None,
                workspace: None,
                home: None,
            },
        };
        match context {
            Some(c) => trace.note(|| format!("agent {} (autonomy {})", c.name, c.autonomy)),
            None => trace.note(|| "no known agent".to_owned()),
        }

        // 1. Hard rules.
        let mut hard_hit: Option<&CompiledRule> = None;
        self.hard.for_each_match(request, &binding, |rule| {
            trace.note(|| {
                format!(
                    "hard rule {} ({}) matches: deny, risk {}",
                    rule.id,
                    self.origin(rule),
                    rule.risk
                )
            });
            if hard_hit.is_none_or(|best| rule.risk > best.risk) {
                hard_hit = Some(rule);
            }
        });
        if let Some(rule) = hard_hit {
            return Decision {
                verdict: Verdict::Deny,
                risk: rule.risk,
                rule_id: Some(rule.id.clone()),
                reason: rule.reason.clone(),
            };
        }

        // 2. What cannot be classified.
        let default_risk = self
            .policy
            .default_risk
            .get(request.action.index())
            .copied()
            .flatten();
        let Some(context) = context else {
            return self.fixed(
                Verdict::Escalate,
                default_risk.unwrap_or(RiskLevel::High),
                &self.reasons.unknown_agent,
            );
        };
        if !has_required_object(category, core, request) {
            trace.note(|| "the object this action type needs is missing".to_owned());
            return self.fixed(
                Verdict::Escalate,
                default_risk.unwrap_or(RiskLevel::High),
                &self.reasons.missing_object,
            );
        }

        // 3. Rules and egress: the strictest opinion wins.
        let mut best: Option<Decision> = None;
        let mut consider =
            |verdict: Verdict, risk: RiskLevel, rule: &Arc<str>, reason: &Arc<str>| {
                if best
                    .as_ref()
                    .is_none_or(|b| (verdict, risk) > (b.verdict, b.risk))
                {
                    best = Some(Decision {
                        verdict,
                        risk,
                        rule_id: Some(rule.clone()),
                        reason: reason.clone(),
                    });
                }
            };
        self.regular.for_each_match(request, &binding, |rule| {
            let verdict = rule
                .verdict
                .unwrap_or_else(|| context.autonomy.verdict_for(rule.risk));
            trace.note(|| match rule.verdict {
                Some(v) => format!(
                    "rule {} ({}) matches: {v}, risk {}",
                    rule.id,
                    self.origin(rule),
                    rule.risk
                ),
                None => format!(
                    "rule {} ({}) matches: risk {} under autonomy {} gives {verdict}",
                    rule.id,
                    self.origin(rule),
                    rule.risk,
                    context.autonomy
                ),
            });
            consider(verdict, rule.risk, &rule.id, &rule.reason);
        });
        if let Some(outcome) = context.egress.as_ref().and_then(|e| e.judge(request, core)) {
            trace.note(|| format!("egress: {} ({})", outcome.verdict, outcome.reason));
            consider(outcome.verdict, outcome.risk, outcome.rule, outcome.reason);
        }

        // 4. Defaults.
        let decision = match best {
            Some(decision) => decision,
            None => match default_risk {
                Some(risk) => {
                    let verdict = context.autonomy.verdict_for(risk);
                    trace.note(|| format!("no rule matches; default risk {risk} under autonomy {} gives {verdict}", context.autonomy));
                    self.fixed(verdict, risk, &self.reasons.default_risk)
                }
                None => {
                    trace.note(|| {
                        "no rule matches and the action type has no default risk".to_owned()
                    });
                    return self.fixed(
                        Verdict::Escalate,
                        RiskLevel::High,
                        &self.reasons.unclassified,
                    );
                }
            },
        };

        // 5. Locked agents.
        if context.autonomy == AutonomyLevel::Locked && decision.verdict == Verdict::Allow {
            trace.note(|| "the agent is locked, so allow becomes escalate".to_owned());
            return Decision {
                verdict: Verdict::Escalate,
                reason: self.reasons.locked.clone(),
                ..decision
            };
        }
        decision
    }

    fn origin(&self, rule: &CompiledRule) -> String {
        match self.policy.rules.get(rule.policy_index) {
            Some(r) => format!("{}:{}", r.origin.file.display(), r.origin.line),
            None => "?".to_owned(),
        }
    }

    fn fixed(&self, verdict: Verdict, risk: RiskLevel, reason: &Arc<str>) -> Decision {
        Decision {
            verdict,
            risk,
            rule_id: None,
            reason: reason.clone(),
        }
    }
}

/// File actions need a path, `proc:exec` a binary, connections an address or host name.
fn has_required_object(
    category: Category,
    core: Option<CoreAction>,
    request: &ActionRequest<'_>,
) -> bool {
    match (category, core) {
        (Category::Fs | Category::Secret, _) => request.path.is_some(),
        (_, Some(CoreAction::ProcExec)) => request.binary.is_some(),
        (_, Some(CoreAction::NetConnect | CoreAction::NetSend | CoreAction::NetBind)) => {
            request.addr.is_some() || request.host.is_some()
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests;
