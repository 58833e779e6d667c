//! Parser and validation errors: each kind, with its position asserted.

use std::path::Path;

use super::*;

fn errors(source: &str) -> Vec<PolicyError> {
    match parse_policy_str(Path::new("p.yaml"), source) {
        Ok(_) => panic!("policy unexpectedly valid:\n{source}"),
        Err(e) => e.0,
    }
}

/// The one error of a policy, as `line:column field message-fragment`.
fn only_error(source: &str) -> PolicyError {
    let mut all = errors(source);
    assert_eq!(all.len(), 1, "expected one error, got: {all:#?}");
    all.remove(0)
}

fn assert_error(source: &str, line: usize, column: usize, field: &str, fragment: &str) {
    let e = only_error(source);
    assert_eq!(
        (e.line, e.column, e.field.as_str()),
        (line, column, field),
        "{e}"
    );
    assert!(
        e.message.contains(fragment),
        "{e:?} does not say {fragment:?}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("p.yaml:{line}:{column}: {field}: ")),
        "{e}"
    );
}

const AGENT: &str = "agents:\n  - name: coder\n    workspace: /ws\n";

#[test]
fn unknown_keys_are_errors_with_their_position() {
    assert_error("versoin: 1\n", 1, 1, "versoin", "unknown field `versoin`");
    assert_error(
        &format!(
            "{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    risk: low\n    verdit: deny\n"
        ),
        8,
        5,
        "rules[0].verdit",
        "unknown field `verdit`",
    );
    assert_error(
        &format!("{AGENT}    worksapce: /x\n"),
        4,
        5,
        "agents[0].worksapce",
        "unknown field `worksapce`",
    );
}

#[test]
fn wrong_values_are_errors_with_their_position() {
    assert_error(
        &format!("{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    risk: severe\n"),
        7,
        11,
        "rules[0].risk",
        "unknown variant `severe`",
    );
    assert_error(
        &format!(
            "{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    risk: low\n    verdict: maybe\n"
        ),
        8,
        14,
        "rules[0].verdict",
        "unknown variant `maybe`",
    );
    assert_error("agents: 5\n", 1, 9, "agents", "invalid type");
}

#[test]
fn syntax_errors_keep_their_position() {
    let e = only_error("version: 1\nrules:\n  - id: x\n\tactions: [fs:read]\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("tab"), "{e}");
}

#[test]
fn bad_globs_name_the_pattern() {
    assert_error(
        &format!("{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    paths: [/ok/**, \"/bad/[z-a]\"]\n    risk: low\n"),
        7,
        21,
        "rules[0].paths[1]",
        "invalid glob",
    );
    assert_error(
        &format!("{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    paths: [relative/x]\n    risk: low\n"),
        7,
        13,
        "rules[0].paths[0]",
        "must start with",
    );
    assert_error(
        &format!("{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    paths: [\"${{home}}/x\"]\n    risk: low\n"),
        7,
        13,
        "rules[0].paths[0]",
        "must start with",
    );
}

#[test]
fn bad_cidrs_hosts_and_ports_name_the_entry() {
    let rule = |sel: &str| {
        format!("{AGENT}rules:\n  - id: a\n    actions: [net:connect]\n    {sel}\n    risk: low\n")
    };
    assert_error(
        &rule("cidrs: [10.0.0.0/8, 10.0.0.1/8]"),
        7,
        25,
        "rules[0].cidrs[1]",
        "did you mean 10.0.0.0/8",
    );
    assert_error(
        &rule("cidrs: [300.1.1.1]"),
        7,
        13,
        "rules[0].cidrs[0]",
        "is not a CIDR",
    );
    assert_error(
        &rule("hosts: [\"bad host\"]"),
        7,
        13,
        "rules[0].hosts[0]",
        "not a valid host name",
    );
    assert_error(
        &rule("ports: [22, 70000]"),
        7,
        17,
        "rules[0].ports[1]",
        "out of range",
    );
    assert_error(
        &format!("{AGENT}egress:\n  coder:\n    allow:\n      - cidr: 10.0.0.0/33\n"),
        7,
        15,
        "egress.coder.allow[0].cidr",
        "is not a CIDR",
    );
    assert_error(
        &format!(
            "{AGENT}egress:\n  coder:\n    allow:\n      - cidr: 10.0.0.0/8\n        host: x.com\n"
        ),
        7,
        9,
        "egress.coder.allow[0]",
        "exactly one of",
    );
    assert_error(
        &format!("{AGENT}egress:\n  coder:\n    dns_resolvers: [dns.google]\n"),
        6,
        21,
        "egress.coder.dns_resolvers[0]",
        "not an IP",
    );
    assert_error(
        &format!("{AGENT}egress:\n  coder:\n    dns_resolvers: [\"10.0.0.2:0\"]\n"),
        6,
        21,
        "egress.coder.dns_resolvers[0]",
        "an address and a port",
    );
    assert_error(
        &format!("{AGENT}egress:\n  coder:\n    dns_refusal: drop\n"),
        6,
        18,
        "egress.coder.dns_refusal",
        "`refused` (the default) or `nxdomain`",
    );
    assert_error(
        &format!(
            "{AGENT}egress:\n  coder:\n    allow:\n      - {{host: x.test, dns_types: [TXT, ANY]}}\n"
        ),
        7,
        41,
        "egress.coder.allow[0].dns_types[1]",
        "meta query",
    );
    assert_error(
        &format!(
            "{AGENT}egress:\n  coder:\n    allow:\n      - {{host: x.test, dns_types: [TXTT]}}\n"
        ),
        7,
        36,
        "egress.coder.allow[0].dns_types[0]",
        "not a DNS record type",
    );
    assert_error(
        &format!(
            "{AGENT}egress:\n  coder:\n    allow:\n      - {{cidr: 10.0.0.0/8, dns_types: [TXT]}}\n"
        ),
        7,
        39,
        "egress.coder.allow[0].dns_types",
        "needs a `host` entry",
    );
    assert_error(
        &format!("{AGENT}egress:\n  coder:\n    unlisted: allow\n"),
        6,
        15,
        "egress.coder.unlisted",
        "every destination",
    );
}

#[test]
fn duplicate_rule_ids_point_at_both_definitions() {
    let e = only_error(&format!(
        "{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    risk: low\n  - id: a\n    actions: [fs:write]\n    risk: low\n"
    ));
    assert_eq!((e.line, e.column, e.field.as_str()), (8, 9, "rules[1].id"));
    assert!(
        e.message
            .contains("duplicate rule id \"a\" (first defined at p.yaml:5)"),
        "{e}"
    );
}

#[test]
fn unknown_action_types_are_errors_with_a_suggestion() {
    assert_error(
        &format!("{AGENT}rules:\n  - id: a\n    actions: [fs:read, fs:delte]\n    risk: low\n"),
        6,
        24,
        "rules[0].actions[1]",
        "did you mean \"fs:delete\"",
    );
    assert_error(
        &format!("{AGENT}rules:\n  - id: a\n    actions: [\"fz:*\"]\n    risk: low\n"),
        6,
        15,
        "rules[0].actions[0]",
        "unknown category",
    );
    assert_error(
        "action_types:\n  - name: fs:shred\n",
        2,
        11,
        "action_types[0].name",
        "cannot be extended",
    );
    // A declared custom type is known; the same name undeclared is not.
    assert!(parse_policy_str(
        Path::new("p.yaml"),
        &format!("action_types:\n  - name: db:vacuum\n{AGENT}rules:\n  - id: a\n    actions: [db:vacuum]\n    risk: low\n")
    )
    .is_ok());
}

#[test]
fn hard_rules_must_deny() {
    assert_error(
        &format!(
            "{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    risk: low\n    hard: true\n"
        ),
        8,
        11,
        "rules[0].hard",
        "verdict: deny",
    );
}

#[test]
fn references_must_resolve() {
    assert_error(
        "egress:\n  ghost:\n    allow: []\n",
        3,
        5,
        "egress.ghost",
        "no agent named \"ghost\"",
    );
    assert_error(
        &format!("{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    agents: [coder, codr]\n    risk: low\n"),
        7,
        21,
        "rules[0].agents[1]",
        "no agent named \"codr\"",
    );
    assert_error(
        &format!("{AGENT}  - name: coder\n    workspace: /w2\n"),
        4,
        11,
        "agents[1].name",
        "already defined",
    );
    assert_error(
        "agents:\n  - name: a\n    workspace: relative\n",
        3,
        16,
        "agents[0].workspace",
        "absolute",
    );
    assert_error(
        "agents:\n  - name: a/b\n    workspace: /w\n",
        2,
        11,
        "agents[0].name",
        "not a valid name",
    );
}

#[test]
fn selectors_that_can_never_match_are_errors() {
    assert_error(
        &format!("{AGENT}rules:\n  - id: a\n    actions: [net:connect]\n    paths: [/x]\n    risk: low\n"),
        7,
        12,
        "rules[0].paths",
        "never matches",
    );
    assert_error(
        &format!(
            "{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    paths: []\n    risk: low\n"
        ),
        7,
        12,
        "rules[0].paths",
        "empty",
    );
    assert_error(
        &format!(
            "{AGENT}rules:\n  - id: a\n    actions: [fs:read]\n    unless: {{}}\n    risk: low\n"
        ),
        7,
        13,
        "rules[0].unless",
        "exempt everything",
    );
}

#[test]
fn empty_and_multi_document_files_are_errors() {
    assert!(only_error("").message.contains("holds no policy"));
    assert!(only_error("# only a comment\n")
        .message
        .contains("holds no policy"));
    assert!(only_error("version: 1\n---\nversion: 1\n")
        .message
        .contains("more than one document"));
    assert_error(
        "version: 2\n",
        1,
        10,
        "version",
        "unsupported policy version 2",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let all = errors(&format!(
        "{AGENT}rules:\n  - id: a\n    actions: [fs:nope]\n    risk: low\n  - id: b\n    actions: [fs:read]\n    paths: [x]\n    risk: low\n"
    ));
    let fields: Vec<_> = all.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["rules[0].actions[0]", "rules[1].paths[0]"]);
}

mod files {
    use super::*;
    use secops_common::RiskLevel;
    use std::fs;
    use std::time::Duration;

    #[test]
    fn includes_merge_and_their_errors_name_the_included_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("inc")).unwrap();
        fs::write(
            dir.path().join("inc/rules.yaml"),
            "rules:\n  - id: r\n    actions: [fs:read]\n    risk: lo\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("main.yaml"),
            format!("include: [inc/rules.yaml]\n{AGENT}"),
        )
        .unwrap();
        let e = load_policy(&dir.path().join("main.yaml"))
            .unwrap_err()
            .0
            .remove(0);
        assert_eq!(e.file, dir.path().join("inc/rules.yaml"));
        assert_eq!(
            (e.line, e.column, e.field.as_str()),
            (4, 11, "rules[0].risk")
        );

        fs::write(
            dir.path().join("inc/rules.yaml"),
            "rules:\n  - id: r\n    actions: [fs:read]\n    agents: [coder]\n    risk: low\n",
        )
        .unwrap();
        let policy = load_policy(&dir.path().join("main.yaml")).unwrap();
        assert_eq!(policy.rules.len(), 1);
        assert_eq!(policy.files.len(), 2);
        assert_eq!(
            policy.rules[0].origin.file,
            dir.path().join("inc/rules.yaml")
        );
    }

    #[test]
    fn include_cycles_missing_files_and_defaults_in_includes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        fs::write(p("a.yaml"), "include: [b.yaml]\n").unwrap();
        fs::write(p("b.yaml"), "include: [c.yaml, a.yaml]\n").unwrap();
        fs::write(p("c.yaml"), "version: 1\n").unwrap();
        let e = load_policy(&p("a.yaml")).unwrap_err().0.remove(0);
        assert_eq!(
            (e.file.clone(), e.line, e.column, e.field.as_str()),
            (p("b.yaml"), 1, 19, "include[1]")
        );
        assert!(e.message.contains("include cycle"), "{e}");

        fs::write(p("b.yaml"), "include:\n  - missing.yaml\n").unwrap();
        let e = load_policy(&p("a.yaml")).unwrap_err().0.remove(0);
        assert_eq!((e.line, e.column, e.field.as_str()), (2, 5, "include[0]"));
        assert!(e.message.contains("missing.yaml"), "{e}");

        fs::write(p("b.yaml"), "defaults:\n  autonomy: full\n").unwrap();
        let e = load_policy(&p("a.yaml")).unwrap_err().0.remove(0);
        assert_eq!(
            (e.file.clone(), e.field.as_str()),
            (p("b.yaml"), "defaults")
        );

        let e = load_policy(&p("nope.yaml")).unwrap_err().0.remove(0);
        assert!(
            e.to_string().starts_with(&format!(
                "{}: .: cannot read policy file",
                p("nope.yaml").display()
            )),
            "{e}"
        );
    }

    #[test]
    fn approvals_may_be_set_in_an_included_file_but_only_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        fs::write(
            p("approvals.yaml"),
            "approvals:\n  timeout: 5m\n  on_timeout: {low: allow}\n",
        )
        .unwrap();
        fs::write(
            p("main.yaml"),
            format!("include: [approvals.yaml]\n{AGENT}"),
        )
        .unwrap();
        let policy = load_policy(&p("main.yaml")).unwrap();
        assert_eq!(policy.approvals.timeout, Duration::from_secs(300));
        assert_eq!(
            policy.approvals.on_timeout(RiskLevel::Low),
            OnTimeout::Allow
        );

        fs::write(
            p("main.yaml"),
            format!("include: [approvals.yaml]\n{AGENT}approvals:\n  timeout: 1h\n"),
        )
        .unwrap();
        let e = only(load_policy(&p("main.yaml")).unwrap_err().0);
        assert_eq!(
            (e.file.clone(), e.line, e.column, e.field.as_str()),
            (p("main.yaml"), 6, 3, "approvals")
        );
        assert!(
            e.message.contains(&format!(
                "already set at {}:2",
                p("approvals.yaml").display()
            )),
            "{e}"
        );
    }

    fn only(mut errors: Vec<PolicyError>) -> PolicyError {
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    #[test]
    fn the_same_file_included_twice_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        fs::write(
            p("shared.yaml"),
            "rules:\n  - id: s\n    actions: [fs:read]\n    risk: low\n",
        )
        .unwrap();
        fs::write(p("x.yaml"), "include: [shared.yaml]\n").unwrap();
        fs::write(p("main.yaml"), "include: [shared.yaml, x.yaml]\n").unwrap();
        assert_eq!(load_policy(&p("main.yaml")).unwrap().rules.len(), 1);
    }
}

#[test]
fn output_scan_policies_are_checked_and_inherited() {
    use super::response::{ResponsePolicy, TierPolicy};
    use secops_common::AutonomyLevel;
    let source = "defaults:\n  output_scan: withhold\nagents:\n  - name: coder\n    workspace: /ws\n  - name: ops\n    workspace: /ops\n    output_scan:\n      autonomy-tiered: {full: log-only, semi: redact, supervised: redact, locked: withhold}\n";
    let policy = parse_policy_str(Path::new("p.yaml"), source).expect("valid");
    assert_eq!(policy.agents[0].output_scan, ResponsePolicy::Withhold);
    assert_eq!(
        policy.agents[1].output_scan.resolve(AutonomyLevel::Full),
        Ok(TierPolicy::LogOnly)
    );
    let plain = parse_policy_str(Path::new("p.yaml"), AGENT).expect("valid");
    assert_eq!(plain.agents[0].output_scan, ResponsePolicy::Redact);

    // A tier left out would withhold at run time: the operator hears it now.
    assert_error(
        &format!(
            "{AGENT}    output_scan:\n      autonomy-tiered: {{full: log-only, semi: redact}}\n"
        ),
        5,
        7,
        "agents[0].output_scan",
        "missing: supervised, locked",
    );
    assert_error(
        "defaults:\n  output_scan: shred\n",
        2,
        16,
        "defaults.output_scan",
        "unknown output scan policy \"shred\"",
    );
}

mod approvals {
    use super::*;
    use secops_common::RiskLevel::{self, *};
    use std::time::Duration;

    fn approvals(section: &str) -> Approvals {
        parse_policy_str(Path::new("p.yaml"), &format!("{AGENT}{section}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .approvals
    }

    #[test]
    fn without_a_section_tickets_wait_ten_minutes_then_are_denied() {
        let a = approvals("");
        assert_eq!(a.timeout, Duration::from_secs(600));
        for risk in RiskLevel::ALL {
            assert_eq!(a.on_timeout(risk), OnTimeout::Deny, "{risk}");
        }
    }

    #[test]
    fn each_tier_gets_its_decision_and_tiers_left_out_deny() {
        let a = approvals(
            "approvals:\n  timeout: 90s\n  on_timeout:\n    low: allow\n    critical: wait\n",
        );
        assert_eq!(a.timeout, Duration::from_secs(90));
        let tiers: Vec<OnTimeout> = RiskLevel::ALL.iter().map(|&r| a.on_timeout(r)).collect();
        use OnTimeout::*;
        assert_eq!(tiers, [Allow, Deny, Deny, Wait]);
        assert_eq!(
            approvals("approvals: {timeout: 2s}\n").timeout,
            Duration::from_secs(2)
        );
        assert_eq!(
            approvals("approvals:\n  on_timeout: {high: wait}\n").on_timeout(High),
            Wait
        );
    }

    #[test]
    fn allow_above_low_risk_is_an_error_at_the_tier() {
        for (tier, column) in [("medium", 13), ("high", 11), ("critical", 15)] {
            assert_error(
                &format!("{AGENT}approvals:\n  on_timeout:\n    low: allow\n    {tier}: allow\n"),
                7,
                column,
                &format!("approvals.on_timeout.{tier}"),
                "accepted only for low risk",
            );
        }
        // Every offending tier is reported, not only the first.
        let all = errors(&format!(
            "{AGENT}approvals:\n  on_timeout: {{medium: allow, critical: allow}}\n"
        ));
        let fields: Vec<_> = all.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "approvals.on_timeout.medium",
                "approvals.on_timeout.critical"
            ]
        );
    }

    #[test]
    fn unknown_tiers_keys_and_decisions_are_errors() {
        assert_error(
            &format!("{AGENT}approvals:\n  on_timeout:\n    severe: deny\n"),
            6,
            5,
            "approvals.on_timeout.severe",
            "unknown field `severe`",
        );
        assert_error(
            &format!("{AGENT}approvals:\n  timout: 5m\n"),
            5,
            3,
            "approvals.timout",
            "unknown field `timout`",
        );
        assert_error(
            &format!("{AGENT}approvals:\n  on_timeout:\n    low: approve\n"),
            6,
            10,
            "approvals.on_timeout.low",
            "unknown variant `approve`",
        );
    }

    #[test]
    fn a_zero_bare_unparseable_or_absurd_timeout_is_an_error() {
        for (value, fragment) in [
            ("0s", "zero timeout"),
            ("\"0\"", "zero timeout"),
            ("600", "has no unit"),
            ("soon", "is not a duration"),
            ("500ms", "shorter than 1s"),
            ("25h", "longer than 1day"),
            ("[10m]", "must be a duration"),
        ] {
            assert_error(
                &format!("{AGENT}approvals:\n  timeout: {value}\n"),
                5,
                12,
                "approvals.timeout",
                fragment,
            );
        }
    }

    #[test]
    fn a_broken_section_never_loads_in_part() {
        // One good value next to a bad one: the policy does not load at all.
        let all = errors(&format!(
            "{AGENT}approvals:\n  timeout: 0s\n  on_timeout: {{low: allow}}\n"
        ));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].field, "approvals.timeout");
    }
}

#[test]
fn auto_lower_is_inherited_overridden_or_off_and_mistakes_are_placed() {
    use std::time::Duration;
    let source = "defaults:\n  auto_lower: {denials: 5, within: 1m}\nagents:\n  - name: coder\n    workspace: /ws\n  - name: ops\n    workspace: /ops\n    auto_lower: {denials: 2, within: 10s}\n  - name: calm\n    workspace: /calm\n    auto_lower: off\n";
    let policy = parse_policy_str(Path::new("p.yaml"), source).expect("valid");
    let rules: Vec<Option<AutoLower>> = policy.agents.iter().map(|a| a.auto_lower).collect();
    assert_eq!(
        rules,
        [
            Some(AutoLower {
                denials: 5,
                within: Duration::from_secs(60)
            }),
            Some(AutoLower {
                denials: 2,
                within: Duration::from_secs(10)
            }),
            None
        ]
    );
    // Without a default, nothing is lowered automatically.
    let plain = parse_policy_str(Path::new("p.yaml"), AGENT).expect("valid");
    assert_eq!(plain.agents[0].auto_lower, None);

    assert_error(
        "defaults:\n  auto_lower: {denials: 5, within: soon}\n",
        2,
        36,
        "defaults.auto_lower.within",
        "\"soon\" is not a duration",
    );
    assert_error(
        &format!("{AGENT}    auto_lower:\n      denials: 0\n      within: 1m\n"),
        5,
        16,
        "agents[0].auto_lower.denials",
        "from 1 to 100000",
    );
    assert_error(
        &format!("{AGENT}    auto_lower: {{denials: 3}}\n"),
        4,
        18,
        "agents[0].auto_lower",
        "missing field `within`",
    );
    assert_error(
        "defaults:\n  auto_lower: on\n",
        2,
        15,
        "defaults.auto_lower",
        "expected `off` or {denials: N, within: DURATION}",
    );
}

#[test]
fn deep_nesting_is_refused_at_once_and_where_it_happens() {
    let deep = format!("rules: {}{}\n", "[".repeat(40_000), "]".repeat(40_000));
    let started = std::time::Instant::now();
    let errors = parse_policy_str(Path::new("deep.yaml"), &deep).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let shown = errors.to_string();
    assert!(shown.starts_with("deep.yaml:1:"), "{shown}");
    assert!(shown.contains("nest deeper than 32 levels"), "{shown}");
}

#[test]
fn includes_must_be_bounded_regular_files_of_a_real_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    for (name, include) in [
        ("proc.yaml", "/proc/self/pagemap"),
        ("sys.yaml", "/sys/kernel/mm/transparent_hugepage/enabled"),
        ("dev.yaml", "/dev/zero"),
    ] {
        let top = dir.path().join(name);
        std::fs::write(&top, format!("include: [\"{include}\"]\nagents: []\n")).unwrap();
        if !Path::new(include).exists() {
            continue;
        }
        let shown = load_policy(&top).unwrap_err().to_string();
        assert!(
            shown.contains("a file of /proc")
                || shown.contains("a file of sysfs")
                || shown.contains("not a regular file"),
            "{include}: {shown}"
        );
        assert!(
            shown.contains("include[0]"),
            "placed at the include: {shown}"
        );
    }
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let top = dir.path().join("fifo.yaml");
    std::fs::write(&top, "include: [fifo]\nagents: []\n").unwrap();
    let shown = load_policy(&top).unwrap_err().to_string();
    assert!(
        shown.contains("not a regular file"),
        "a FIFO does not block: {shown}"
    );
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, format!("# {}\nagents: []\n", "x".repeat(17 << 20))).unwrap();
    let shown = load_policy(&big).unwrap_err().to_string();
    assert!(shown.contains("larger than the 16 MiB allowed"), "{shown}");
}

#[test]
fn a_list_item_folded_into_the_one_before_it_is_an_error() {
    let source = "agents:\n  - {name: a, workspace: /w}\nrules:\n  - id: dotfiles\n    actions: [fs:write]\n    paths:\n      - '~/.bashrc - ~/.bash_profile'\n    verdict: deny\n    risk: high\n";
    let shown = parse_policy_str(Path::new("p.yaml"), source)
        .unwrap_err()
        .to_string();
    assert!(shown.contains("rules[0].paths[0]"), "{shown}");
    assert!(shown.contains("two list items folded"), "{shown}");
    let fine = source.replace("'~/.bashrc - ~/.bash_profile'", "'/srv/a?-?b'");
    assert!(parse_policy_str(Path::new("p.yaml"), &fine).is_ok());
}

#[test]
fn required_layers_are_named_exactly_and_an_agent_adds_to_the_defaults() {
    assert_error(
        "defaults:\n  require: [egress, lms]\nagents:\n  - name: coder\n    workspace: /ws\n",
        2,
        21,
        "defaults.require[1]",
        "\"lms\" is not a layer; the layers are lsm, egress, events, dns, landlock",
    );
    assert_error(
        &format!("{AGENT}    require: [lsm, landlocked]\n"),
        4,
        20,
        "agents[0].require[1]",
        "is not a layer",
    );
    let policy = parse_policy_str(
        Path::new("p.yaml"),
        "defaults:\n  require: [egress]\nagents:\n  - name: coder\n    workspace: /ws\n    \
         require: [lsm, egress]\n  - name: other\n    workspace: /ws\n",
    )
    .unwrap();
    assert_eq!(policy.defaults.require, [Layer::Egress]);
    assert_eq!(policy.agents[0].require, [Layer::Lsm, Layer::Egress]);
    assert_eq!(policy.agents[1].require, [Layer::Egress]);
}
