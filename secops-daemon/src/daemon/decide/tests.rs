//! The decision path over a real approval queue and a real audit log (SQLite in a temporary
//! directory); only the lowering, which would recompile kernel maps, is the test's own.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::approvals::{Decided, TicketStatus};
use crate::audit::{AuditPaths, AuditReader, CheckpointPolicy, QueryFilter, Record, WriterOptions};
use crate::daemon::autonomy::DenialWindows;
use crate::engine::NormalizedPath;
use crate::notify::EventKind;
use crate::policy::parse_policy_str;

const POLICY: &str = "\
defaults:
  autonomy: semi
  auto_lower: {denials: 2, within: 1m}
agents:
  - {name: coder, workspace: /srv/coder}
rules:
  - id: no-etc
    actions: [fs:delete]
    paths: [\"/etc/**\"]
    verdict: deny
    risk: high
  - id: ask-push
    actions: [vcs:push]
    verdict: escalate
    risk: high
  - id: ask-opt
    actions: [fs:delete]
    paths: [\"/opt/**\"]
    verdict: escalate
    risk: medium
egress:
  coder:
    allow:
      - {cidr: 10.0.0.0/8, ports: [443]}
      - {host: \"*.pkg.test\", ports: [443]}
";

struct TestContext {
    engine: Arc<Engine>,
    scanner: Scanner,
    tickets: Mutex<TicketStore>,
    metrics: Metrics,
    denials: Mutex<DenialWindows>,
    lowered: Mutex<Vec<String>>,
    notified: Mutex<Vec<(EventKind, u64)>>,
}

impl Context for TestContext {
    fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
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
        lock(&self.denials).note_by_policy(self.engine.policy(), agent, Instant::now())
    }

    fn auto_lower(&self, agent: &str) -> Result<Option<AutonomyChange>, ControlError> {
        lock(&self.lowered).push(agent.to_owned());
        Ok(Some(AutonomyChange {
            agent: agent.to_owned(),
            from: "semi".into(),
            to: "supervised".into(),
            overridden: true,
            reason: "lowered automatically: 2 denials within 1m".into(),
        }))
    }

    fn notify(&self, event: TicketEvent) {
        lock(&self.notified).push((event.kind, event.ticket.id));
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    ctx: Arc<TestContext>,
    writer: Arc<AuditWriter>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = parse_policy_str(Path::new("p.yaml"), POLICY).expect("policy");
    let tickets = TicketStore::open(&dir.path().join("approvals.db")).expect("tickets");
    let writer = AuditWriter::open(
        &AuditPaths::new(dir.path()),
        CheckpointPolicy::default(),
        WriterOptions::default(),
    )
    .expect("audit writer");
    Fixture {
        ctx: Arc::new(TestContext {
            engine: Arc::new(Engine::new(Arc::new(policy))),
            scanner: Scanner::new(),
            tickets: Mutex::new(tickets),
            metrics: Metrics::new(),
            denials: Mutex::new(DenialWindows::default()),
            lowered: Mutex::new(Vec::new()),
            notified: Mutex::new(Vec::new()),
        }),
        writer: Arc::new(writer),
        dir,
    }
}

impl Fixture {
    /// Every record so far, committed first.
    fn records(&self) -> Vec<Record> {
        self.writer
            .append(NewRecord::new(
                0,
                "tool:call",
                Verdict::Allow,
                RiskLevel::Low,
                "flush".into(),
                Source::Api,
            ))
            .wait()
            .expect("flush");
        let mut all = AuditReader::open(&AuditPaths::new(self.dir.path()))
            .expect("reader")
            .query(&QueryFilter::default())
            .expect("query");
        all.retain(|r| r.body.reason != "flush");
        all
    }

    fn decide(&self, request: Request) -> Outcome {
        let outcome = decide(self.ctx.as_ref(), &self.writer, request, AuditMode::Commit);
        if let Recorded::Committing(ticket) = outcome.recorded {
            ticket.wait().expect("commit");
            return Outcome {
                judged: outcome.judged,
                recorded: Recorded::Queued,
            };
        }
        outcome
    }
}

fn coder() -> Actor {
    Actor {
        agent: Some("coder".into()),
        cgroup_id: Some(77),
        pid: Some(4242),
        tgid: Some(4242),
        uid: Some(1000),
        comm: Some("rm".into()),
        exe: Some("/usr/bin/rm".into()),
    }
}

fn delete(path: &str) -> ResolvedAction {
    let mut action = ResolvedAction::core(CoreAction::FsDelete);
    action.path = Some(NormalizedPath::new(path).expect("path"));
    action
}

fn request(door: Door, action: ResolvedAction) -> Request {
    let object = action.audit_object();
    Request {
        door,
        at_ns: 1_000,
        actor: coder(),
        action,
        object,
        inode: None,
        detail: String::new(),
        note: String::new(),
    }
}

#[test]
fn every_door_records_the_same_shape_with_its_own_source() {
    let f = fixture();
    let doors = [
        Door::Api,
        Door::Parked { can_wait: true },
        Door::Kernel {
            verdict: Verdict::Deny,
            check: KernelCheck::Lsm {
                rule: Some(Arc::from("no-etc")),
            },
        },
        Door::Ticket(Decision {
            verdict: Verdict::Deny,
            risk: RiskLevel::High,
            rule_id: Some(Arc::from("no-etc")),
            reason: Arc::from("ticket #1 denied by a human"),
        }),
        Door::Dns(dns_query("A", true)),
    ];
    for door in doors {
        let mut r = request(door, delete("/etc/passwd"));
        r.detail = "unlink".into();
        assert_eq!(f.decide(r).verdict(), Verdict::Deny);
    }
    let mut records = f.records();
    // The second denial reached auto_lower's threshold: that record is the lowering's.
    records.retain(|r| r.body.action != "sys:autonomy");
    let sources: Vec<Source> = records.iter().map(|r| r.body.source).collect();
    assert_eq!(
        sources,
        [
            Source::Api,
            Source::Parked,
            Source::Kernel,
            Source::Approval,
            Source::Dns
        ]
    );
    for r in &records {
        let b = &r.body;
        assert_eq!(b.agent.as_deref(), Some("coder"), "{b:?}");
        assert_eq!(b.cgroup_id, Some(77));
        assert_eq!((b.pid, b.uid), (Some(4242), Some(1000)));
        assert_eq!(b.action, "fs:delete");
        assert_eq!(
            b.object,
            Some(AuditObject {
                kind: ObjectKind::Path,
                value: "/etc/passwd".into()
            })
        );
        assert_eq!(b.verdict, Verdict::Deny);
        assert_eq!(b.risk, RiskLevel::High);
        assert_eq!(b.rule_id.as_deref(), Some("no-etc"));
        assert_eq!(b.ts_ns, 1_000);
    }
    assert_eq!(
        records[2].body.reason,
        "denied by BPF LSM, rule no-etc (unlink)"
    );
    assert!(records[1]
        .body
        .reason
        .starts_with("refused before the call ran"));
    let metrics = f.ctx.metrics.encode(
        &Default::default(),
        crate::daemon::metrics::Exposition::OpenMetrics,
    );
    for source in ["api", "parked", "kernel", "approval", "dns"] {
        assert!(
            metrics.contains(&format!("source=\"{source}\",verdict=\"deny\"")),
            "no {source} decision counted:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("secops_decision_latency_seconds_count{source=\"parked\"}"),
        "parked calls have a latency: {metrics}"
    );
}

fn dns_query(qtype: &str, type_allowed: bool) -> DnsQuery {
    DnsQuery {
        qtype: qtype.into(),
        type_allowed,
        type_rule: "egress.coder.dns-types".into(),
        may_ask: true,
        repeat: false,
    }
}

fn name(host: &str) -> ResolvedAction {
    let mut action = ResolvedAction::core(CoreAction::NetDns);
    action.host = Some(host.into());
    action
}

#[test]
fn the_dns_door_answers_allowed_names_refuses_the_rest_and_folds_repeats() {
    let f = fixture();
    let allowed = f.decide(request(
        Door::Dns(dns_query("AAAA", true)),
        name("a.pkg.test"),
    ));
    assert_eq!(allowed.verdict(), Verdict::Allow);
    assert!(allowed
        .judged
        .reason
        .starts_with("AAAA answered: the name is in"));
    assert_eq!(allowed.judged.rule_id.as_deref(), Some("egress.coder"));

    let tunnel = f.decide(request(
        Door::Dns(dns_query("A", true)),
        name("c2VjcmV0.evil.test"),
    ));
    assert_eq!(tunnel.verdict(), Verdict::Deny);
    assert_eq!(
        tunnel.judged.rule_id.as_deref(),
        Some("egress.coder.default-deny")
    );
    assert!(tunnel.judged.reason.starts_with("A refused, not forwarded"));

    let txt = f.decide(request(
        Door::Dns(dns_query("TXT", false)),
        name("a.pkg.test"),
    ));
    assert_eq!(
        txt.verdict(),
        Verdict::Deny,
        "an allowed name, a type the policy does not add"
    );
    assert_eq!(
        txt.judged.rule_id.as_deref(),
        Some("egress.coder.dns-types")
    );

    let mut repeat = dns_query("A", true);
    repeat.repeat = true;
    let again = f.decide(request(
        Door::Dns(repeat.clone()),
        name("c2VjcmV0.evil.test"),
    ));
    assert!(
        matches!(again.recorded, Recorded::NotNeeded),
        "recorded with its repeats later"
    );
    let mut records = f.records();
    records.retain(|r| r.body.action != "sys:autonomy");
    assert_eq!(records.len(), 3, "the repeat has no record of its own");
    assert!(records.iter().all(|r| r.body.source == Source::Dns));
    assert_eq!(records[0].body.object.as_ref().unwrap().value, "a.pkg.test");
    // Two first denials reached auto_lower's 2; the repeat was not counted.
    assert_eq!(*lock(&f.ctx.lowered), ["coder"]);
    f.decide(request(Door::Dns(repeat), name("c2VjcmV0.evil.test")));
    assert_eq!(lock(&f.ctx.lowered).len(), 1);

    let aggregated = tunnel.judged.repeats_record(41, 1_000, 2_000, "");
    assert_eq!(aggregated.ts_ns, 2_000);
    assert!(
        aggregated.reason.contains("; 41 more between"),
        "{}",
        aggregated.reason
    );
    assert_eq!(aggregated.source, Source::Dns);
}

#[test]
fn a_dns_escalation_asks_a_human_only_while_there_is_room() {
    let escalate = Decision {
        verdict: Verdict::Escalate,
        risk: RiskLevel::High,
        rule_id: Some(Arc::from("egress.coder.unlisted")),
        reason: Arc::from("not listed"),
    };
    let (verdict, _, reason) = dns_outcome(&dns_query("A", true), &escalate);
    assert_eq!(verdict, Verdict::Escalate);
    assert!(reason.contains("until a human approves"));
    let mut full = dns_query("A", true);
    full.may_ask = false;
    let (verdict, rule, _) = dns_outcome(&full, &escalate);
    assert_eq!(
        (verdict, rule.as_deref()),
        (Verdict::Deny, Some("egress.coder.unlisted"))
    );
    // A type the policy does not allow is never a question for a human.
    let (verdict, rule, _) = dns_outcome(&dns_query("TXT", false), &escalate);
    assert_eq!(
        (verdict, rule.as_deref()),
        (Verdict::Deny, Some("egress.coder.dns-types"))
    );
}

#[test]
fn kernel_verdicts_are_what_the_kernel_did_and_the_reason_says_what_the_policy_says() {
    let f = fixture();
    let tracepoint = Door::Kernel {
        verdict: Verdict::Allow,
        check: KernelCheck::Tracepoint,
    };
    let observed = f.decide(request(tracepoint, delete("/etc/hosts"))).judged;
    assert_eq!(observed.verdict, Verdict::Allow, "observed, not blocked");
    assert!(
        observed
            .reason
            .starts_with("observed only, NOT blocked (no synchronous enforcement"),
        "{}",
        observed.reason
    );
    assert!(observed.reason.contains("rule no-etc would deny: "));
    assert_eq!(
        observed.rule_id, None,
        "an allow that names a rule reads as allowed by it"
    );

    let mut connect = ResolvedAction::core(CoreAction::NetConnect);
    connect.addr = Some(IpAddr::from([10, 1, 2, 3]));
    connect.port = Some(443);
    let egress = Door::Kernel {
        verdict: Verdict::Deny,
        check: KernelCheck::Egress,
    };
    let denied = f.decide(request(egress, connect)).judged;
    assert_eq!(denied.verdict, Verdict::Deny);
    assert_eq!(
        denied.rule_id.as_deref(),
        Some("egress.coder.kernel"),
        "the kernel's allowlist denied what the engine allows"
    );

    let builtin = Door::Kernel {
        verdict: Verdict::Deny,
        check: KernelCheck::Lsm { rule: None },
    };
    let protected = f.decide(request(builtin, delete("/srv/coder/x"))).judged;
    assert_eq!(protected.rule_id.as_deref(), Some(BUILTIN_RULE_ID));
    let allowed = Door::Kernel {
        verdict: Verdict::Allow,
        check: KernelCheck::Lsm { rule: None },
    };
    let outside = f.decide(request(allowed, delete("/tmp/scratch"))).judged;
    assert_eq!(
        outside.rule_id, None,
        "an allowed delete no rule decided is not the self-protection's"
    );
}

#[test]
fn a_call_the_landlock_ruleset_refused_is_a_denial_by_the_protecting_rule() {
    let f = fixture();
    let landlock = Door::Kernel {
        verdict: Verdict::Deny,
        check: KernelCheck::Landlock,
    };
    let denied = f
        .decide(request(landlock.clone(), delete("/etc/hosts")))
        .judged;
    assert_eq!(denied.verdict, Verdict::Deny);
    assert_eq!(denied.rule_id.as_deref(), Some("no-etc"));
    assert!(
        denied.reason.starts_with("denied by Landlock, rule no-etc"),
        "{}",
        denied.reason
    );
    assert!(!denied.reason.contains("NOT blocked"), "{}", denied.reason);
    // Where no rule denies it (secops' own files), the built-in protection is named.
    let own = f.decide(request(landlock, delete("/tmp/scratch"))).judged;
    assert_eq!(own.rule_id.as_deref(), Some(BUILTIN_RULE_ID));
    assert!(own.ticket.is_none(), "this layer opens no tickets");
}

#[test]
fn escalations_open_one_ticket_per_object_with_the_door_as_source() {
    let f = fixture();
    let mut r = request(
        Door::Kernel {
            verdict: Verdict::Escalate,
            check: KernelCheck::Lsm {
                rule: Some(Arc::from("ask-opt")),
            },
        },
        delete("/opt/app/data"),
    );
    r.inode = Some((8, 99));
    let first = f.decide(r.clone()).judged;
    let again = f.decide(r).judged;
    let id = first.ticket.expect("a ticket");
    assert_eq!(again.ticket, Some(id), "a repeat joins the open ticket");
    let ticket = f.ctx.tickets().get(id).expect("ticket");
    assert_eq!(ticket.source, Source::Kernel);
    assert_eq!(ticket.count, 2);
    assert_eq!(ticket.object, "/opt/app/data");
    assert_eq!(ticket.object_inode, Some((8, 99)));
    assert!(f.records()[0]
        .body
        .reason
        .ends_with(&format!("; approval ticket {id}")));

    let parked = f
        .decide(request(
            Door::Parked { can_wait: true },
            delete("/opt/other"),
        ))
        .judged;
    let parked_ticket = f.ctx.tickets().get(parked.ticket.expect("ticket")).unwrap();
    assert_eq!(parked_ticket.source, Source::Parked);

    let full = f
        .decide(request(
            Door::Parked { can_wait: false },
            delete("/opt/third"),
        ))
        .judged;
    assert_eq!(full.verdict, Verdict::Deny, "no room to wait: refused");
    assert_eq!(full.ticket, None);
    // Each ticket is announced once, when it opens; the repeat that joined it is not.
    assert_eq!(
        *lock(&f.ctx.notified),
        [
            (EventKind::Opened, id),
            (EventKind::Opened, parked_ticket.id)
        ]
    );
}

#[test]
fn a_running_approval_lets_the_engine_doors_through_but_not_a_kernel_event() {
    let f = fixture();
    let push = || {
        let mut a = ResolvedAction::core(CoreAction::VcsPush);
        a.host = Some("origin".into());
        a
    };
    let asked = f.decide(request(Door::Api, push())).judged;
    let id = asked.ticket.expect("ticket");
    assert_eq!(asked.verdict, Verdict::Escalate);
    f.ctx
        .tickets()
        .decide(
            id,
            &Decided::Approve {
                grant: std::time::Duration::from_secs(60),
                once: false,
            },
            "alice",
            None,
            now_ns(),
        )
        .expect("approve");
    let retried = f.decide(request(Door::Api, push())).judged;
    assert_eq!(retried.verdict, Verdict::Allow);
    assert_eq!(retried.granted_by, Some(id));
    assert!(retried
        .reason
        .starts_with(&format!("approved in ticket #{id} by alice")));

    let parked = f.decide(request(Door::Parked { can_wait: true }, push()));
    assert_eq!(parked.verdict(), Verdict::Allow);
    assert!(
        matches!(parked.recorded, Recorded::NotNeeded),
        "a call that continues is recorded by the kernel layer it continues into"
    );
    let kernel = f
        .decide(request(
            Door::Kernel {
                verdict: Verdict::Escalate,
                check: KernelCheck::Lsm {
                    rule: Some(Arc::from("ask-push")),
                },
            },
            push(),
        ))
        .judged;
    assert_eq!(
        kernel.verdict,
        Verdict::Escalate,
        "the kernel checks its own grants; a kernel escalation stays one"
    );
    assert_eq!(kernel.granted_by, None);
    let reopened = kernel
        .ticket
        .expect("the kernel's escalation opens a new ticket");
    assert_ne!(reopened, id);
    assert_eq!(
        f.ctx.tickets().get(id).unwrap().status,
        TicketStatus::Approved
    );
}

#[test]
fn denials_count_towards_auto_lower_except_a_human_s() {
    let f = fixture();
    let ticket_denial = Door::Ticket(Decision {
        verdict: Verdict::Deny,
        risk: RiskLevel::High,
        rule_id: None,
        reason: Arc::from("denied by a human"),
    });
    for _ in 0..3 {
        f.decide(request(ticket_denial.clone(), delete("/etc/a")));
    }
    assert!(
        lock(&f.ctx.lowered).is_empty(),
        "a human's denial is not the agent's"
    );
    f.decide(request(Door::Api, delete("/etc/a")));
    f.decide(request(Door::Parked { can_wait: true }, delete("/etc/b")));
    assert_eq!(
        *lock(&f.ctx.lowered),
        ["coder"],
        "the second denial reaches 2"
    );
    let lowering = f
        .records()
        .into_iter()
        .find(|r| r.body.action == "sys:autonomy")
        .expect("the lowering is audited");
    assert_eq!(
        lowering.body.source,
        Source::Parked,
        "the door of the denial"
    );
    assert_eq!(lowering.body.cgroup_id, Some(77));
}

#[test]
fn a_durable_api_decision_waits_for_its_commit_and_lowers_before_it_answers() {
    let f = fixture();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for expected_lowerings in [0, 1] {
            let (outcome, seq) = decide_async(
                &f.ctx,
                &f.writer,
                request(Door::Api, delete("/etc/x")),
                true,
            )
            .await
            .expect("an answer");
            assert_eq!(outcome.verdict(), Verdict::Deny);
            assert!(seq.is_some(), "a durable check returns its record's seq");
            assert_eq!(lock(&f.ctx.lowered).len(), expected_lowerings);
        }
        let (outcome, seq) = decide_async(
            &f.ctx,
            &f.writer,
            request(Door::Api, delete("/srv/coder/y")),
            false,
        )
        .await
        .expect("an answer");
        assert_eq!(seq, None, "a non-durable check is answered once queued");
        assert_ne!(outcome.verdict(), Verdict::Deny);
    });
    let seqs: Vec<u64> = f.records().iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs.len(),
        4,
        "two denials, the lowering, the allowed delete"
    );
}

#[test]
fn credentials_in_what_an_agent_wrote_are_redacted_before_the_record_is_stored() {
    let f = fixture();
    let token = "ghp_R7mP2vQ9xK4tL8wN3bY6cJ1hF5dS0aZ2eG7i";
    let mut exec = ResolvedAction::core(CoreAction::ProcExec);
    exec.binary = Some(NormalizedPath::new("/usr/bin/env").unwrap());
    let mut r = request(
        Door::Kernel {
            verdict: Verdict::Allow,
            check: KernelCheck::Tracepoint,
        },
        exec,
    );
    r.detail = format!("argv: env GITHUB_TOKEN={token} git push");
    r.note = format!("; arguments \"--token {token}\"");
    f.decide(r);
    let stored = f.records().remove(0).body;
    assert!(!stored.reason.contains(token), "{}", stored.reason);
    assert!(
        stored
            .reason
            .contains("GITHUB_TOKEN=[REDACTED:github_token]"),
        "{}",
        stored.reason
    );
    assert!(
        stored
            .reason
            .ends_with("; redacted before it was stored: 2 github_token"),
        "{}",
        stored.reason
    );
    let metrics = f.ctx.metrics.encode(
        &Default::default(),
        crate::daemon::metrics::Exposition::OpenMetrics,
    );
    assert!(
        metrics.contains("secops_audit_redactions_total{category=\"github_token\"} 2"),
        "{metrics}"
    );
}
