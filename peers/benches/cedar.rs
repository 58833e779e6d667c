//! The engine bench's 1,000-rule policy through `cedar-policy` beside secops' engine, on the
//! same requests (the 8 shapes, and random requests over 8 agents), in one run:
//! `cargo bench -p secops-peers --bench cedar`.
//!
//! Cedar has no verdict but permit and forbid, so every rule is a `permit` policy and Cedar
//! answers which rules match (its `reason` set); the precedence secops applies (strictest
//! verdict, then higher risk, then the earlier rule; the egress allowlist; default risk
//! through autonomy) is applied here to Cedar's answer, written out independently of the
//! engine. Every request must get the same verdict and rule from both, or the bench fails.
//!
//! Translation notes: Cedar's `like` `*` also crosses `/`, so `/opt/bin5/*` also matches
//! `/opt/bin5/a/b` in Cedar and not in secops; the requests never put a `/` where a
//! one-component `*` stands, and the agreement check would fail if they did.
//! `${workspace}` globs are matched on the path below the agent's workspace, which the
//! request's context carries (Cedar patterns are literals).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicySet, Request as CedarRequest,
    RestrictedExpression,
};
use secops_common::{AutonomyLevel, CoreAction, RiskLevel, Verdict};
use secops_daemon::engine::synthetic::{self, Request};
use secops_daemon::engine::Engine;
use secops_daemon::policy::{builtin_default_risk, parse_policy_str};

const RULES: usize = 1000;
const AGENTS: usize = 8;
const FS: &[&str] = &[
    "fs:read",
    "fs:write",
    "fs:create",
    "fs:delete",
    "fs:rename",
    "fs:link",
    "fs:truncate",
    "fs:chmod",
];

/// What each Cedar policy (`policy{i}`) stands for.
struct RuleInfo {
    id: String,
    verdict: Option<Verdict>,
}

/// The synthetic policy's rules as Cedar policies, rule i as `policy{i}`.
fn cedar_policies() -> (String, Vec<RuleInfo>) {
    let verdicts = [
        Some(Verdict::Allow),
        Some(Verdict::Deny),
        Some(Verdict::Escalate),
        None,
    ];
    let actions = |names: &[&str]| {
        names
            .iter()
            .map(|a| format!("Action::\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let path_is = |p: &str| format!("(context has path && context.path == \"{p}\")");
    let path_like = |p: &str| format!("(context has path && context.path like \"{p}\")");
    let mut src = String::new();
    let mut info = Vec::with_capacity(RULES);
    for i in 0..RULES {
        let (acts, principal, when): (Vec<&str>, Option<String>, String) = match i % 10 {
            0 => (
                FS.to_vec(),
                None,
                format!(
                    "{} || {}",
                    path_is(&format!("/data/project{i}")),
                    path_like(&format!("/data/project{i}/*"))
                ),
            ),
            1 => (vec!["fs:write", "fs:delete"], None, path_like(&format!("*.ext{i}"))),
            2 => (
                vec!["fs:read"],
                None,
                [
                    path_is(&format!("/root/.config/tool{i}")),
                    path_like(&format!("/root/.config/tool{i}/*")),
                    path_like(&format!("/home/*/.config/tool{i}")),
                    path_like(&format!("/home/*/.config/tool{i}/*")),
                ]
                .join(" || "),
            ),
            3 => (
                vec!["fs:delete"],
                None,
                format!(
                    "context has below_workspace && (context.below_workspace == \"/build{i}\" || context.below_workspace like \"/build{i}/*\") && !(context.path like \"*/keep{i}\")"
                ),
            ),
            4 => (
                vec!["fs:read", "secret:read"],
                None,
                [
                    path_like(&format!("/etc/app{i}/*.key")),
                    path_is(&format!("/opt/app{i}/secret")),
                    path_like(&format!("/opt/app{i}/*/secret")),
                ]
                .join(" || "),
            ),
            5 => (
                vec!["proc:exec"],
                None,
                format!(
                    "context has binary && (context.binary like \"/opt/bin{i}/*\" || context.binary like \"*/tool{i}\")"
                ),
            ),
            6 => (
                vec!["net:connect"],
                None,
                format!(
                    "context has addr && context.addr.isInRange(ip(\"10.{}.{}.0/24\")) && context has port && context.port == {}",
                    i / 256 % 256,
                    i % 256,
                    1000 + i
                ),
            ),
            7 => (
                vec!["net:connect"],
                None,
                format!(
                    "context has host && context.host == \"svc{i}.example.com\" && context has port && context.port == 443"
                ),
            ),
            8 => (
                vec!["fs:write"],
                Some(format!("agent{}", i % AGENTS)),
                [
                    path_is(&format!("/var/log/app{i}")),
                    path_like(&format!("/var/log/app{i}/*")),
                ]
                .join(" || "),
            ),
            _ => (
                vec!["tool:call", "vcs:push"],
                None,
                format!("context has host && context.host like \"*.host{i}.example.org\""),
            ),
        };
        let principal = match principal {
            Some(agent) => format!("principal == Agent::\"{agent}\""),
            None => "principal".to_owned(),
        };
        writeln!(
            src,
            "@id(\"rule{i}\")\npermit({principal}, action in [{}], resource) when {{ {when} }};",
            actions(&acts)
        )
        .expect("writing to a String");
        info.push(RuleInfo {
            id: format!("rule{i}"),
            verdict: verdicts[i % 4],
        });
    }
    (src, info)
}

/// Cedar's answer (which rules match) with secops' precedence applied.
struct CedarJudge {
    authorizer: Authorizer,
    policies: PolicySet,
    entities: Entities,
    rules: Vec<RuleInfo>,
    /// Policy id → rule index.
    index: HashMap<String, usize>,
    resource: EntityUid,
}

impl CedarJudge {
    fn new() -> CedarJudge {
        let (src, rules) = cedar_policies();
        let policies = PolicySet::from_str(&src).unwrap_or_else(|e| panic!("{e:?}"));
        let index = policies
            .policies()
            .filter_map(|p| {
                let rule = p.annotation("id")?;
                let i = rule.strip_prefix("rule")?.parse().ok()?;
                Some((p.id().to_string(), i))
            })
            .collect();
        CedarJudge {
            authorizer: Authorizer::new(),
            policies,
            entities: Entities::empty(),
            rules,
            index,
            resource: EntityUid::from_str("Object::\"request\"").expect("uid"),
        }
    }

    fn decide(&self, r: &Request) -> (Verdict, Option<String>) {
        let workspace = format!("/srv/agents/{}", r.agent);
        let mut context: Vec<(String, RestrictedExpression)> = Vec::new();
        if let Some(p) = &r.path {
            let p = p.as_str();
            context.push(("path".into(), RestrictedExpression::new_string(p.into())));
            if let Some(rest) = p.strip_prefix(&workspace) {
                if rest.is_empty() || rest.starts_with('/') {
                    context.push((
                        "below_workspace".into(),
                        RestrictedExpression::new_string(rest.into()),
                    ));
                }
            }
        }
        if let Some(b) = &r.binary {
            context.push((
                "binary".into(),
                RestrictedExpression::new_string(b.as_str().into()),
            ));
        }
        if let Some(a) = r.addr {
            context.push(("addr".into(), RestrictedExpression::new_ip(a.to_string())));
        }
        if let Some(h) = &r.host {
            context.push((
                "host".into(),
                RestrictedExpression::new_string(h.to_ascii_lowercase()),
            ));
        }
        if let Some(p) = r.port {
            context.push(("port".into(), RestrictedExpression::new_long(i64::from(p))));
        }
        let request = CedarRequest::new(
            EntityUid::from_str(&format!("Agent::\"{}\"", r.agent)).expect("uid"),
            EntityUid::from_str(&format!("Action::\"{}\"", r.action)).expect("uid"),
            self.resource.clone(),
            Context::from_pairs(context).expect("context"),
            None,
        )
        .expect("request");
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &self.entities);
        let mut matched: Vec<usize> = response
            .diagnostics()
            .reason()
            .filter_map(|id| self.index.get(&id.to_string()).copied())
            .collect();
        matched.sort_unstable();
        self.precedence(r, &matched)
    }

    /// secops' precedence over the matching rules (every rule is risk medium; the agents are
    /// `semi`; the synthetic policy has no hard rules).
    fn precedence(&self, r: &Request, matched: &[usize]) -> (Verdict, Option<String>) {
        let autonomy = AutonomyLevel::Semi;
        let mut best: Option<(Verdict, RiskLevel, String)> = None;
        let mut consider = |verdict: Verdict, risk: RiskLevel, rule: String| {
            if best.as_ref().is_none_or(|b| (verdict, risk) > (b.0, b.1)) {
                best = Some((verdict, risk, rule));
            }
        };
        for &i in matched {
            let rule = &self.rules[i];
            let risk = RiskLevel::Medium;
            let verdict = rule.verdict.unwrap_or_else(|| autonomy.verdict_for(risk));
            consider(verdict, risk, rule.id.clone());
        }
        if r.action == "net:connect" {
            // agent0's allowlist is 127.0.0.0/8 ports 1024-65535; the others have none.
            let allowed = r.agent == "agent0"
                && r.addr.is_some_and(|a| match a {
                    std::net::IpAddr::V4(v4) => v4.octets()[0] == 127,
                    std::net::IpAddr::V6(_) => false,
                })
                && r.port.is_some_and(|p| p >= 1024);
            if allowed {
                consider(
                    Verdict::Allow,
                    RiskLevel::Low,
                    format!("egress.{}", r.agent),
                );
            } else {
                consider(
                    Verdict::Deny,
                    RiskLevel::High,
                    format!("egress.{}.default-deny", r.agent),
                );
            }
        }
        match best {
            Some((verdict, _, rule)) => (verdict, Some(rule)),
            None => {
                let core = CoreAction::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == r.action)
                    .expect("a core action");
                (autonomy.verdict_for(builtin_default_risk(core)), None)
            }
        }
    }
}

struct Timed(Vec<Duration>);

impl Timed {
    fn pct(&self, p: f64) -> Duration {
        self.0[((self.0.len() as f64 * p) as usize).min(self.0.len() - 1)]
    }
}

fn time<T>(requests: &[Request], rounds: usize, mut decide: impl FnMut(&Request) -> T) -> Timed {
    let mut samples = Vec::with_capacity(requests.len() * rounds);
    for _ in 0..rounds {
        for r in requests {
            let start = Instant::now();
            black_box(decide(r));
            samples.push(start.elapsed());
        }
    }
    samples.sort_unstable();
    Timed(samples)
}

fn compare(name: &str, engine: &Engine, cedar: &CedarJudge, requests: &[Request], rounds: usize) {
    let mut disagreements = Vec::new();
    for r in requests {
        let ours = engine.decide(&r.for_engine(engine).expect("core action"));
        let theirs = cedar.decide(r);
        let ours = (ours.verdict, ours.rule_id.map(|id| id.to_string()));
        if ours != theirs {
            disagreements.push(format!("{r:?}: secops {ours:?}, cedar {theirs:?}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{name}: {} of {} requests disagree, e.g.\n{}",
        disagreements.len(),
        requests.len(),
        disagreements[..disagreements.len().min(5)].join("\n")
    );
    let secops = time(requests, rounds * 20, |r| {
        engine.decide(&r.for_engine(engine).expect("core action"))
    });
    let peer = time(requests, rounds, |r| cedar.decide(r));
    println!(
        "{name} ({} requests, both agree on all): secops median {:?}, p99 {:?}; cedar median {:?}, p99 {:?}; cedar / secops: {:.0}x at the median, {:.0}x at p99",
        requests.len(),
        secops.pct(0.5),
        secops.pct(0.99),
        peer.pct(0.5),
        peer.pct(0.99),
        peer.pct(0.5).as_secs_f64() / secops.pct(0.5).as_secs_f64(),
        peer.pct(0.99).as_secs_f64() / secops.pct(0.99).as_secs_f64(),
    );
}

fn main() {
    let started = Instant::now();
    let policy = parse_policy_str(Path::new("bench.yaml"), &synthetic::policy(RULES, AGENTS))
        .unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(Arc::new(policy));
    let ours = started.elapsed();
    let started = Instant::now();
    let cedar = CedarJudge::new();
    let theirs = started.elapsed();
    println!("{RULES} rules: secops parses and compiles in {ours:?}; cedar parses in {theirs:?}");
    compare(
        "the 8 request shapes",
        &engine,
        &cedar,
        &synthetic::shaped_requests(),
        50,
    );
    compare(
        "random requests over 8 agents",
        &engine,
        &cedar,
        &synthetic::random_requests(RULES, AGENTS, 3000, 21),
        1,
    );
}
