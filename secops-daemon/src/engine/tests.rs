use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use secops_common::{AutonomyLevel, RiskLevel, Verdict};

use super::*;
use crate::policy::{load_policy, parse_policy_str};

fn engine(source: &str) -> Engine {
    match parse_policy_str(Path::new("t.yaml"), source) {
        Ok(policy) => Engine::new(Arc::new(policy)),
        Err(e) => panic!("{e}"),
    }
}

/// One action, described the way an operator would: `("coder", "fs:delete", "/ws/x")`.
struct Ask<'e> {
    engine: &'e Engine,
    agent: Option<&'e str>,
    action: &'e str,
    path: Option<NormalizedPath>,
    binary: Option<NormalizedPath>,
    addr: Option<IpAddr>,
    host: Option<&'e str>,
    port: Option<u16>,
}

impl<'e> Ask<'e> {
    fn new(engine: &'e Engine, agent: &'e str, action: &'e str) -> Self {
        Ask {
            engine,
            agent: Some(agent),
            action,
            path: None,
            binary: None,
            addr: None,
            host: None,
            port: None,
        }
    }
    fn path(mut self, p: &str) -> Self {
        self.path = Some(NormalizedPath::new(p).unwrap());
        self
    }
    fn binary(mut self, p: &str) -> Self {
        self.binary = Some(NormalizedPath::new(p).unwrap());
        self
    }
    fn to(mut self, addr: &str, port: u16) -> Self {
        self.addr = Some(addr.parse().unwrap());
        self.port = Some(port);
        self
    }
    fn host(mut self, host: &'e str, port: u16) -> Self {
        self.host = Some(host);
        self.port = Some(port);
        self
    }
    fn decide(&self) -> Decision {
        let (action, _) = self.engine.policy().registry.resolve(self.action).unwrap();
        let agent = self.agent.and_then(|a| self.engine.agent_index(a));
        let request = ActionRequest {
            agent,
            action,
            path: self.path.as_ref(),
            binary: self.binary.as_ref(),
            addr: self.addr,
            host: self.host,
            port: self.port,
        };
        self.engine.decide(&request)
    }
    fn verdict(&self) -> Verdict {
        self.decide().verdict
    }
    fn rule(&self) -> Option<String> {
        self.decide().rule_id.map(|r| r.to_string())
    }
}

#[test]
fn every_autonomy_and_risk_cell() {
    use AutonomyLevel::*;
    use RiskLevel::*;
    use Verdict::*;
    // Written out independently of the matrix in secops-common, so a change there is caught.
    let expected = [
        (Full, [Allow, Allow, Allow, Escalate]),
        (Semi, [Allow, Allow, Escalate, Escalate]),
        (Supervised, [Allow, Escalate, Escalate, Deny]),
        (Locked, [Escalate, Deny, Deny, Deny]),
    ];
    for (autonomy, verdicts) in expected {
        for (risk, verdict) in [Low, Medium, High, Critical].into_iter().zip(verdicts) {
            let e = engine(&format!(
                "agents:\n  - name: a\n    workspace: /ws\n    autonomy: {autonomy}\n\
                 rules:\n  - id: r\n    actions: [tool:call]\n    risk: {risk}\n"
            ));
            let d = Ask::new(&e, "a", "tool:call").decide();
            assert_eq!(
                (d.verdict, d.risk),
                (verdict, risk),
                "autonomy {autonomy}, risk {risk}"
            );
            assert_eq!(d.rule_id.as_deref(), Some("r"));
        }
    }
}

#[test]
fn unmatched_actions_use_the_default_risk_through_autonomy() {
    let e = engine(
        "defaults:\n  risk:\n    tool:call: high\n\
         agents:\n  - name: full\n    workspace: /w1\n    autonomy: full\n  - name: semi\n    workspace: /w2\n    autonomy: semi\n",
    );
    assert_eq!(Ask::new(&e, "full", "tool:call").verdict(), Verdict::Allow);
    assert_eq!(
        Ask::new(&e, "semi", "tool:call").verdict(),
        Verdict::Escalate
    );
    // Built-in table: secret:read is critical.
    let d = Ask::new(&e, "full", "secret:read").path("/x").decide();
    assert_eq!(
        (d.verdict, d.risk, d.rule_id),
        (Verdict::Escalate, RiskLevel::Critical, None)
    );
}

const HARD: &str = "\
agents:
  - name: a
    workspace: /ws
    autonomy: full
rules:
  - id: keys
    actions: [fs:read, secret:read]
    paths: [~/.ssh/**]
    verdict: deny
    risk: critical
    hard: true
  - id: allow-everything
    actions: [\"fs:*\", \"secret:*\"]
    paths: [/**]
    verdict: allow
    risk: low
";

#[test]
fn hard_rules_are_never_relaxed() {
    let e = engine(HARD);
    let d = Ask::new(&e, "a", "fs:read")
        .path("/root/.ssh/id_rsa")
        .decide();
    assert_eq!(
        (d.verdict, d.rule_id.as_deref()),
        (Verdict::Deny, Some("keys"))
    );
    assert_eq!(
        Ask::new(&e, "a", "secret:read")
            .path("/home/bob/.ssh/id_ed25519")
            .verdict(),
        Verdict::Deny
    );
    // Not relaxed for processes of no known agent either.
    let mut unknown = Ask::new(&e, "a", "fs:read").path("/root/.ssh/id_rsa");
    unknown.agent = None;
    assert_eq!(unknown.verdict(), Verdict::Deny);
    // The explicit allow applies elsewhere.
    assert_eq!(
        Ask::new(&e, "a", "fs:read").path("/etc/hosts").verdict(),
        Verdict::Allow
    );
}

#[test]
fn the_strictest_matching_rule_wins_whatever_the_order() {
    for order in [["allow", "escalate", "deny"], ["deny", "allow", "escalate"]] {
        let rules: String = order
            .iter()
            .map(|v| format!("  - id: {v}\n    actions: [fs:write]\n    paths: [/data/**]\n    verdict: {v}\n    risk: low\n"))
            .collect();
        let e = engine(&format!(
            "agents:\n  - name: a\n    workspace: /ws\nrules:\n{rules}"
        ));
        assert_eq!(
            Ask::new(&e, "a", "fs:write")
                .path("/data/x")
                .rule()
                .as_deref(),
            Some("deny")
        );
    }
    // Equal verdicts: the higher risk names the decision.
    let e = engine(
        "agents:\n  - name: a\n    workspace: /ws\nrules:\n\
         - {id: low, actions: [fs:write], paths: [/d/**], verdict: escalate, risk: low}\n\
         - {id: high, actions: [fs:write], paths: [/d/**], verdict: escalate, risk: high}\n",
    );
    let d = Ask::new(&e, "a", "fs:write").path("/d/x").decide();
    assert_eq!(
        (d.rule_id.as_deref(), d.risk),
        (Some("high"), RiskLevel::High)
    );
}

#[test]
fn what_cannot_be_classified_escalates() {
    let e = engine(
        "action_types:\n  - name: tool:browser_open\n\
         agents:\n  - name: a\n    workspace: /ws\n    autonomy: full\n",
    );
    // Unknown agent.
    let mut unknown = Ask::new(&e, "a", "fs:read").path("/ws/x");
    unknown.agent = Some("nobody");
    assert_eq!(unknown.verdict(), Verdict::Escalate);
    // A file action without a path, an exec without a binary, a connect without an address.
    assert_eq!(Ask::new(&e, "a", "fs:delete").verdict(), Verdict::Escalate);
    assert_eq!(Ask::new(&e, "a", "proc:exec").verdict(), Verdict::Escalate);
    assert_eq!(
        Ask::new(&e, "a", "net:connect").verdict(),
        Verdict::Escalate
    );
    // A declared type without a default risk, no rule matching it.
    let d = Ask::new(&e, "a", "tool:browser_open").decide();
    assert_eq!((d.verdict, d.rule_id), (Verdict::Escalate, None));
    assert!(d.reason.contains("no default risk"), "{}", d.reason);
    // An action id this policy never had.
    let request = ActionRequest::new(e.agent_index("a"), secops_common::ActionId(9999));
    assert_eq!(e.decide(&request).verdict, Verdict::Escalate);
}

#[test]
fn workspace_and_home_expand_per_agent() {
    let e = engine(
        "defaults:\n  homes: [/home/*]\n\
         agents:\n  - name: a\n    workspace: /srv/a\n    autonomy: full\n\
         \x20 - name: b\n    workspace: /srv/b/\n    home: /var/lib/b\n    autonomy: full\n\
         rules:\n\
         - {id: ws, actions: [fs:delete], paths: [\"${workspace}/**\"], verdict: allow, risk: low}\n\
         - {id: not-ws, actions: [fs:delete], paths: [/srv/**], verdict: escalate, risk: high, unless: {paths: [\"${workspace}/**\"]}}\n\
         - {id: home, actions: [fs:write], paths: [\"~/.bashrc\"], verdict: deny, risk: high}\n",
    );
    assert_eq!(
        Ask::new(&e, "a", "fs:delete")
            .path("/srv/a/src/x.rs")
            .rule()
            .as_deref(),
        Some("ws")
    );
    assert_eq!(
        Ask::new(&e, "a", "fs:delete")
            .path("/srv/b/src/x.rs")
            .rule()
            .as_deref(),
        Some("not-ws")
    );
    assert_eq!(
        Ask::new(&e, "b", "fs:delete")
            .path("/srv/b/src/x.rs")
            .rule()
            .as_deref(),
        Some("ws")
    );
    // `..` cannot borrow the workspace's allowance.
    assert_eq!(
        Ask::new(&e, "a", "fs:delete")
            .path("/srv/a/../b/x")
            .rule()
            .as_deref(),
        Some("not-ws")
    );
    // `~` is every default home for a, and b's own home for b.
    assert_eq!(
        Ask::new(&e, "a", "fs:write")
            .path("/home/alice/.bashrc")
            .verdict(),
        Verdict::Deny
    );
    assert_eq!(
        Ask::new(&e, "a", "fs:write")
            .path("/var/lib/b/.bashrc")
            .verdict(),
        Verdict::Allow
    );
    assert_eq!(
        Ask::new(&e, "b", "fs:write")
            .path("/var/lib/b/.bashrc")
            .verdict(),
        Verdict::Deny
    );
    assert_eq!(
        Ask::new(&e, "b", "fs:write")
            .path("/home/alice/.bashrc")
            .verdict(),
        Verdict::Allow
    );
}

#[test]
fn glob_edge_cases() {
    let e = engine(
        "agents:\n  - name: a\n    workspace: /ws\n    autonomy: full\n\
         rules:\n\
         - {id: star, actions: [fs:read], paths: [\"/s/*.txt\"], verdict: deny, risk: low}\n\
         - {id: globstar, actions: [fs:read], paths: [\"/g/**/*.txt\"], verdict: deny, risk: low}\n\
         - {id: tree, actions: [fs:delete], paths: [\"/t/**\"], verdict: deny, risk: low}\n\
         - {id: env, actions: [fs:read], paths: [\"**/.env\", \"**/.env.*\"], unless: {paths: [\"**/.env.example\"]}, verdict: deny, risk: low}\n\
         - {id: class, actions: [fs:read], paths: [\"/c/file[0-9]\", \"/c/{a,b}.conf\"], verdict: deny, risk: low}\n",
    );
    let read = |p: &str| Ask::new(&e, "a", "fs:read").path(p).rule();
    assert_eq!(read("/s/a.txt").as_deref(), Some("star"));
    assert_eq!(read("/s/sub/a.txt"), None, "* does not cross /");
    assert_eq!(
        read("/g/a.txt").as_deref(),
        Some("globstar"),
        "** matches zero directories"
    );
    assert_eq!(read("/g/x/y/z/a.txt").as_deref(), Some("globstar"));
    assert_eq!(read("/g/a.txt.bak"), None);
    assert_eq!(read("/.env").as_deref(), Some("env"));
    assert_eq!(read("/srv/app/deep/.env").as_deref(), Some("env"));
    assert_eq!(read("/srv/app/.env.production").as_deref(), Some("env"));
    assert_eq!(read("/srv/app/.env.example"), None, "unless exempts");
    assert_eq!(read("/srv/app/not.env"), None);
    assert_eq!(read("/c/file7").as_deref(), Some("class"));
    assert_eq!(read("/c/filex"), None);
    assert_eq!(read("/c/b.conf").as_deref(), Some("class"));
    let delete = |p: &str| Ask::new(&e, "a", "fs:delete").path(p).rule();
    assert_eq!(
        delete("/t").as_deref(),
        Some("tree"),
        "dir/** covers the directory itself"
    );
    assert_eq!(delete("/t/a/b").as_deref(), Some("tree"));
    assert_eq!(delete("/tx"), None);
    assert_eq!(delete("/t/../x"), None, "normalized before matching");
}

#[test]
fn selectors_combine_and_binaries_match() {
    let e = engine(
        "agents:\n  - name: a\n    workspace: /ws\n    autonomy: full\n\
         rules:\n\
         - {id: nc, actions: [proc:exec], binaries: [\"**/nc\"], verdict: deny, risk: high}\n\
         - {id: ssh-out, actions: [net:connect], cidrs: [10.0.0.0/8], ports: [22], verdict: deny, risk: high}\n",
    );
    assert_eq!(
        Ask::new(&e, "a", "proc:exec")
            .binary("/usr/bin/nc")
            .verdict(),
        Verdict::Deny
    );
    assert_eq!(
        Ask::new(&e, "a", "proc:exec")
            .binary("/ws/tools/nc")
            .verdict(),
        Verdict::Deny
    );
    // No rule: proc:exec's default risk (medium) under full autonomy.
    assert_eq!(
        Ask::new(&e, "a", "proc:exec")
            .binary("/usr/bin/ncat")
            .verdict(),
        Verdict::Allow
    );
    // cidrs and ports must both match.
    let connect = |addr: &str, port: u16| Ask::new(&e, "a", "net:connect").to(addr, port).rule();
    // (The agent has no allowlist and egress defaults to deny, so the egress stage denies too;
    // between equal verdicts and risks the rule comes first.)
    assert_eq!(connect("10.1.2.3", 22).as_deref(), Some("ssh-out"));
    assert_eq!(
        connect("10.1.2.3", 80).as_deref(),
        Some("egress.a.default-deny")
    );
    assert_eq!(
        connect("11.0.0.1", 22).as_deref(),
        Some("egress.a.default-deny")
    );
}

const EGRESS: &str = "\
agents:
  - name: a
    workspace: /ws
    autonomy: full
  - name: open
    workspace: /ws2
    autonomy: full
defaults:
  egress: deny
rules:
  - id: metadata
    actions: [net:connect, net:send]
    cidrs: [169.254.169.254/32]
    verdict: deny
    risk: critical
    hard: true
egress:
  a:
    allow:
      - cidr: 127.0.0.0/8
        ports: [\"8000-8100\"]
      - cidr: fd00::/8
      - host: \"*.example.com\"
        ports: [443]
    dns_resolvers: [127.0.0.53, \"::ffff:10.0.0.2\"]
";

#[test]
fn unlisted_destinations_can_ask_a_human_but_hard_rules_still_deny() {
    let policy = EGRESS.replace(
        "    dns_resolvers: [127.0.0.53,",
        "    unlisted: escalate\n    dns_resolvers: [127.0.0.53,",
    );
    assert_ne!(policy, EGRESS);
    let e = engine(&policy);
    let connect = |addr: &str, port: u16| Ask::new(&e, "a", "net:connect").to(addr, port).decide();
    assert_eq!(connect("127.0.0.1", 8080).verdict, Verdict::Allow);
    let d = connect("8.8.8.8", 443);
    assert_eq!(
        (d.verdict, d.rule_id.as_deref()),
        (Verdict::Escalate, Some("egress.a.unlisted"))
    );
    assert_eq!(connect("169.254.169.254", 80).verdict, Verdict::Deny);
}

#[test]
fn names_resolve_when_an_allowlist_entry_names_them_whatever_its_ports() {
    let e = engine(EGRESS);
    let dns = |host: &'static str| {
        let mut ask = Ask::new(&e, "a", "net:dns");
        ask.host = Some(host);
        ask.decide()
    };
    let d = dns("api.example.com");
    assert_eq!(
        (d.verdict, d.rule_id.as_deref()),
        (Verdict::Allow, Some("egress.a"))
    );
    assert_eq!(dns("API.Example.com.").verdict, Verdict::Allow);
    let d = dns("example.com");
    assert_eq!(
        (d.verdict, d.rule_id.as_deref()),
        (Verdict::Deny, Some("egress.a.default-deny")),
        "a wildcard is not its parent"
    );
    assert!(d.reason.contains("name is not in the egress allowlist"));
    assert_eq!(dns("c2VjcmV0.attacker.test").verdict, Verdict::Deny);
    let asking = engine(&EGRESS.replace(
        "    dns_resolvers: [127.0.0.53,",
        "    unlisted: escalate\n    dns_resolvers: [127.0.0.53,",
    ));
    let mut ask = Ask::new(&asking, "a", "net:dns");
    ask.host = Some("new.test");
    assert_eq!(ask.verdict(), Verdict::Escalate);
}

#[test]
fn egress_allowlists_are_default_deny() {
    let e = engine(EGRESS);
    let connect = |addr: &str, port: u16| Ask::new(&e, "a", "net:connect").to(addr, port).verdict();
    assert_eq!(connect("127.0.0.1", 8080), Verdict::Allow);
    assert_eq!(
        connect("127.0.0.1", 8101),
        Verdict::Deny,
        "port outside the range"
    );
    assert_eq!(
        connect("::ffff:127.0.0.1", 8080),
        Verdict::Allow,
        "IPv4-mapped is judged as IPv4"
    );
    assert_eq!(connect("::ffff:127.0.0.1", 9000), Verdict::Deny);
    assert_eq!(
        connect("fd12::1", 1),
        Verdict::Allow,
        "no ports means every port"
    );
    assert_eq!(connect("8.8.8.8", 443), Verdict::Deny);
    let by_host =
        |host: &str, port: u16| Ask::new(&e, "a", "net:connect").host(host, port).verdict();
    assert_eq!(by_host("api.example.com", 443), Verdict::Allow);
    assert_eq!(by_host("example.com", 443), Verdict::Deny);
    assert_eq!(by_host("api.example.com", 80), Verdict::Deny);
    // UDP reaches only the resolvers, and only DNS.
    let send = |addr: &str, port: u16| Ask::new(&e, "a", "net:send").to(addr, port).decide();
    assert_eq!(send("127.0.0.53", 53).verdict, Verdict::Allow);
    assert_eq!(
        send("10.0.0.2", 53).verdict,
        Verdict::Allow,
        "a mapped resolver address is its IPv4 address"
    );
    assert_eq!(send("::ffff:127.0.0.53", 53).verdict, Verdict::Allow);
    assert_eq!(send("127.0.0.53", 54).verdict, Verdict::Deny);
    let d = send("127.0.0.1", 8080);
    assert_eq!(
        (d.verdict, d.rule_id.as_deref()),
        (Verdict::Deny, Some("egress.a.default-deny")),
        "UDP is not TCP's allowlist"
    );
    // A hard deny beats the allowlist; an agent without an entry gets the default (deny).
    assert_eq!(
        Ask::new(&e, "open", "net:connect")
            .to("127.0.0.1", 8080)
            .verdict(),
        Verdict::Deny
    );
    let d = Ask::new(&e, "a", "net:connect")
        .to("::ffff:169.254.169.254", 80)
        .decide();
    assert_eq!(
        (d.verdict, d.rule_id.as_deref()),
        (Verdict::Deny, Some("metadata"))
    );
}

#[test]
fn destination_rules_are_found_by_prefix_and_host_suffix() {
    let e = engine(
        "defaults:\n  egress: allow\nagents:\n  - name: a\n    workspace: /ws\n    autonomy: full\n\
         rules:\n\
         - {id: any4, actions: [net:connect], cidrs: [0.0.0.0/0], ports: [25], verdict: deny, risk: low}\n\
         - {id: net16, actions: [net:connect], cidrs: [10.20.0.0/16], verdict: deny, risk: low}\n\
         - {id: host32, actions: [net:connect], cidrs: [10.30.1.2], verdict: deny, risk: low}\n\
         - {id: v6, actions: [net:connect], cidrs: [\"2001:db8::/32\"], verdict: deny, risk: low}\n\
         - {id: wild, actions: [net:connect], hosts: [\"*.Corp.Example\"], verdict: deny, risk: low}\n\
         - {id: exact, actions: [net:connect], hosts: [api.test], cidrs: [192.0.2.0/24], verdict: deny, risk: low}\n",
    );
    let rule = |addr: Option<&str>, host: Option<&str>, port: u16| {
        let mut ask = Ask::new(&e, "a", "net:connect");
        ask.addr = addr.map(|a| a.parse().unwrap());
        ask.host = host;
        ask.port = Some(port);
        ask.rule()
    };
    assert_eq!(rule(Some("8.8.8.8"), None, 25).as_deref(), Some("any4"));
    assert_eq!(rule(Some("8.8.8.8"), None, 26), None);
    assert_eq!(rule(Some("10.20.255.1"), None, 1).as_deref(), Some("net16"));
    assert_eq!(rule(Some("10.21.0.1"), None, 1), None);
    assert_eq!(rule(Some("10.30.1.2"), None, 1).as_deref(), Some("host32"));
    assert_eq!(rule(Some("10.30.1.3"), None, 1), None);
    assert_eq!(
        rule(Some("2001:db8:ffff::1"), None, 1).as_deref(),
        Some("v6")
    );
    assert_eq!(rule(Some("2001:db9::1"), None, 1), None);
    assert_eq!(
        rule(None, Some("git.CORP.example."), 1).as_deref(),
        Some("wild")
    );
    assert_eq!(
        rule(None, Some("a.b.corp.example"), 1).as_deref(),
        Some("wild")
    );
    assert_eq!(rule(None, Some("corp.example"), 1), None);
    assert_eq!(
        rule(None, Some("api.test"), 1).as_deref(),
        Some("exact"),
        "hosts or cidrs"
    );
    assert_eq!(rule(Some("192.0.2.9"), None, 1).as_deref(), Some("exact"));
    assert_eq!(
        rule(Some("::ffff:10.20.0.1"), None, 1).as_deref(),
        Some("net16")
    );
}

#[test]
fn egress_default_allow_leaves_connections_to_rules_and_autonomy() {
    let e = engine(&EGRESS.replace("egress: deny", "egress: allow"));
    assert_eq!(
        Ask::new(&e, "open", "net:connect")
            .to("8.8.8.8", 443)
            .verdict(),
        Verdict::Allow
    );
    assert_eq!(
        Ask::new(&e, "a", "net:connect")
            .to("8.8.8.8", 443)
            .verdict(),
        Verdict::Deny,
        "a's own allowlist still applies"
    );
}

#[test]
fn locked_agents_get_no_allow() {
    let e = engine(
        "agents:\n  - name: a\n    workspace: /ws\n    autonomy: locked\n\
         rules:\n  - {id: ws, actions: [\"fs:*\"], paths: [\"${workspace}/**\"], verdict: allow, risk: low}\n",
    );
    let d = Ask::new(&e, "a", "fs:write").path("/ws/x").decide();
    assert_eq!(
        (d.verdict, d.rule_id.as_deref()),
        (Verdict::Escalate, Some("ws"))
    );
    assert!(d.reason.contains("locked"));
}

#[test]
fn explain_says_which_rules_matched_and_why() {
    let e = engine(HARD);
    let (action, _) = e.policy().registry.resolve("fs:read").unwrap();
    let path = NormalizedPath::new("/root/.ssh/id_rsa").unwrap();
    let request = ActionRequest {
        path: Some(&path),
        ..ActionRequest::new(e.agent_index("a"), action)
    };
    let explanation = e.explain(&request);
    assert_eq!(explanation.decision, e.decide(&request));
    assert_eq!(explanation.steps[0], "agent a (autonomy full)");
    assert!(
        explanation.steps[1].starts_with("hard rule keys (t.yaml:6) matches: deny"),
        "{:?}",
        explanation.steps
    );
}

mod default_policy {
    use super::*;

    fn default_engine() -> Engine {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.yaml");
        Engine::new(Arc::new(
            load_policy(&path).unwrap_or_else(|e| panic!("{e}")),
        ))
    }

    #[test]
    fn credentials_are_hard_denied() {
        let e = default_engine();
        for path in [
            "/root/.ssh/id_rsa",
            "/home/dev/.aws/credentials",
            "/home/dev/.config/gcloud/credentials.db",
            "/srv/agents/coder/app/.env",
            "/etc/shadow",
        ] {
            let d = Ask::new(&e, "coder", "secret:read").path(path).decide();
            assert_eq!(
                (d.verdict, d.risk),
                (Verdict::Deny, RiskLevel::Critical),
                "{path}"
            );
            assert_eq!(
                Ask::new(&e, "coder", "fs:read").path(path).verdict(),
                Verdict::Deny,
                "{path}"
            );
        }
        assert_eq!(
            Ask::new(&e, "coder", "fs:read")
                .path("/srv/agents/coder/app/.env.example")
                .verdict(),
            Verdict::Allow
        );
    }

    #[test]
    fn destruction_outside_the_workspace_escalates() {
        let e = default_engine();
        assert_eq!(
            Ask::new(&e, "coder", "fs:delete")
                .path("/srv/agents/coder/build/x.o")
                .verdict(),
            Verdict::Allow
        );
        assert_eq!(
            Ask::new(&e, "coder", "fs:delete")
                .path("/tmp/scratch")
                .verdict(),
            Verdict::Allow
        );
        assert_eq!(
            Ask::new(&e, "coder", "fs:delete").path("/tmp").verdict(),
            Verdict::Escalate
        );
        assert_eq!(
            Ask::new(&e, "coder", "fs:delete")
                .path("/srv/agents/coder")
                .verdict(),
            Verdict::Escalate,
            "the workspace root itself"
        );
        assert_eq!(
            Ask::new(&e, "coder", "fs:delete")
                .path("/home/dev/notes.txt")
                .verdict(),
            Verdict::Escalate
        );
        assert_eq!(
            Ask::new(&e, "coder", "fs:rename")
                .path("/etc/hosts")
                .verdict(),
            Verdict::Escalate
        );
    }

    #[test]
    fn persistence_and_secops_files_are_denied() {
        let e = default_engine();
        assert_eq!(
            Ask::new(&e, "coder", "fs:write")
                .path("/root/.bashrc")
                .verdict(),
            Verdict::Deny
        );
        assert_eq!(
            Ask::new(&e, "coder", "fs:write")
                .path("/srv/agents/coder/.git/hooks/pre-commit")
                .verdict(),
            Verdict::Deny
        );
        assert_eq!(
            Ask::new(&e, "coder", "fs:write")
                .path("/srv/agents/coder/src/main.rs")
                .verdict(),
            Verdict::Allow
        );
        assert_eq!(
            Ask::new(&e, "coder", "fs:read")
                .path("/var/lib/secops/audit.db")
                .verdict(),
            Verdict::Deny
        );
        assert_eq!(Ask::new(&e, "coder", "sys:bpf").verdict(), Verdict::Deny);
        assert_eq!(
            Ask::new(&e, "coder", "proc:exec")
                .binary("/usr/bin/sudo")
                .verdict(),
            Verdict::Deny
        );
        assert_eq!(
            Ask::new(&e, "coder", "proc:exec")
                .binary("/usr/bin/git")
                .verdict(),
            Verdict::Allow
        );
    }

    #[test]
    fn egress_is_default_deny_with_an_allowlist() {
        let e = default_engine();
        assert_eq!(
            Ask::new(&e, "coder", "net:connect")
                .to("127.0.0.1", 8080)
                .verdict(),
            Verdict::Allow
        );
        assert_eq!(
            Ask::new(&e, "coder", "net:connect")
                .host("pypi.org", 443)
                .verdict(),
            Verdict::Allow
        );
        assert_eq!(
            Ask::new(&e, "coder", "net:connect")
                .to("1.1.1.1", 443)
                .verdict(),
            Verdict::Deny
        );
        assert_eq!(
            Ask::new(&e, "coder", "net:connect")
                .to("169.254.169.254", 80)
                .verdict(),
            Verdict::Deny
        );
    }
}

mod at_scale {
    use super::*;
    use crate::engine::synthetic;

    fn huge(rules: usize, extra: &str) -> Engine {
        let mut source = synthetic::policy(rules, 8);
        let at = source
            .find("egress:")
            .expect("the synthetic policy has egress");
        source.insert_str(at, extra);
        engine(&source)
    }

    fn decide(e: &Engine, agent: &str, action: &str, path: &str) -> Decision {
        Ask::new(e, agent, action).path(path).decide()
    }

    /// 50,000 rules is where the glob set used before could no longer be built and every path
    /// rule silently stopped matching.
    #[test]
    fn path_rules_match_at_50000_rules() {
        let e = huge(50_000, "");
        for (agent, action, path, rule, verdict) in [
            (
                "agent0",
                "fs:delete",
                "/data/project500/deep/file.txt",
                "rule500",
                Verdict::Allow,
            ),
            (
                "agent1",
                "fs:read",
                "/data/project49990/x",
                "rule49990",
                Verdict::Escalate,
            ),
            (
                "agent2",
                "fs:write",
                "/srv/x/y.ext49991",
                "rule49991",
                Verdict::Allow,
            ),
            (
                "agent3",
                "fs:delete",
                "/srv/agents/agent3/build49993/o",
                "rule49993",
                Verdict::Deny,
            ),
            (
                "agent4",
                "fs:read",
                "/home/u/.config/tool49992/c",
                "rule49992",
                Verdict::Allow,
            ),
            (
                "agent6",
                "fs:write",
                "/var/log/app49998/x",
                "rule49998",
                Verdict::Escalate,
            ),
        ] {
            let d = decide(&e, agent, action, path);
            assert_eq!(
                (d.rule_id.as_deref(), d.verdict),
                (Some(rule), verdict),
                "{agent} {action} {path}"
            );
        }
        // Bound to the agent: another agent's workspace and another agent's own rule miss.
        assert_eq!(
            decide(&e, "agent2", "fs:delete", "/srv/agents/agent3/build49993/o").rule_id,
            None
        );
        assert_eq!(
            decide(&e, "agent5", "fs:write", "/var/log/app49998/x").rule_id,
            None
        );
        // `unless` still applies.
        assert_eq!(
            decide(
                &e,
                "agent3",
                "fs:delete",
                "/srv/agents/agent3/build49993/keep49993"
            )
            .rule_id,
            None
        );
    }

    #[test]
    fn a_deny_path_rule_in_a_huge_policy_still_denies() {
        let extra = concat!(
            "  - {id: protected, actions: [\"fs:*\"], paths: [\"/srv/protected/**\"], verdict: deny, risk: high}\n",
            "  - {id: keys, actions: [fs:read, secret:read], paths: [\"~/.ssh/**\"], verdict: deny, risk: critical, hard: true}\n",
            "  - {id: open, actions: [\"fs:*\"], paths: [\"/**\"], verdict: allow, risk: low}\n",
        );
        let e = huge(50_000, extra);
        let d = decide(&e, "agent0", "fs:delete", "/srv/protected/a/b");
        assert_eq!(
            (d.verdict, d.rule_id.as_deref()),
            (Verdict::Deny, Some("protected"))
        );
        let d = decide(&e, "agent7", "fs:read", "/home/bob/.ssh/id_ed25519");
        assert_eq!(
            (d.verdict, d.rule_id.as_deref()),
            (Verdict::Deny, Some("keys"))
        );
        let mut unknown = Ask::new(&e, "agent0", "secret:read").path("/root/.ssh/id_rsa");
        unknown.agent = None;
        assert_eq!(unknown.verdict(), Verdict::Deny);
        assert_eq!(
            decide(&e, "agent0", "fs:delete", "/srv/other")
                .rule_id
                .as_deref(),
            Some("open")
        );
    }
}
