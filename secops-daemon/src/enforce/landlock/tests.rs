use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::policy::parse_policy_str;

struct Fixture {
    dir: tempfile::TempDir,
    engine: Engine,
}

fn fixture(egress: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for d in ["ws/src", "protected/sub", "home/.ssh", "bin", "state"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    for f in [
        "protected/keep.txt",
        "home/.ssh/id_rsa",
        "home/notes",
        "bin/nc",
        "bin/tool",
    ] {
        std::fs::write(root.join(f), "x").expect("write");
    }
    let t = root.display();
    let source = format!(
        r#"
version: 1
defaults:
  homes: [{t}/home]
  egress: deny
agents:
  - name: a
    workspace: {t}/ws
    autonomy: semi
rules:
  - id: ws
    actions: ["fs:*"]
    paths: ["${{workspace}}/**"]
    risk: low
  - id: protected
    actions: [fs:delete, fs:rename, fs:link, fs:truncate, fs:write, fs:create]
    paths: ["{t}/protected/**"]
    verdict: deny
    risk: high
  - id: secrets
    actions: [secret:read, fs:read]
    paths: ["~/.ssh/**"]
    verdict: deny
    risk: critical
    hard: true
  - id: nc
    actions: [proc:exec]
    binaries: ["{t}/bin/nc"]
    verdict: escalate
    risk: high
{egress}
"#
    );
    let policy = parse_policy_str(Path::new("t.yaml"), &source).unwrap_or_else(|e| panic!("{e}"));
    Fixture {
        dir,
        engine: Engine::new(Arc::new(policy)),
    }
}

impl Fixture {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn plan(&self) -> LandlockPlan {
        let agent = self.engine.agent_index("a").expect("agent a");
        compile(
            &self.engine,
            agent,
            &[Fixed::everything(self.path("state"))],
        )
    }
}

/// The rights the plan grants at `path`: the union of every grant on it or above it.
fn granted(plan: &LandlockPlan, path: &Path) -> BitFlags<AccessFs> {
    let bits = plan
        .paths
        .iter()
        .filter(|p| path.starts_with(&p.path))
        .fold(0, |acc, p| acc | p.access);
    BitFlags::from_bits_truncate(bits)
}

#[test]
fn protected_trees_get_no_destructive_rights_and_the_workspace_gets_all() {
    let f = fixture("");
    let plan = f.plan();
    let ws = granted(&plan, &f.path("ws/src/new.c"));
    assert_eq!(ws, rights_of(ALL_GROUPS), "the workspace holds every right");
    let protected = granted(&plan, &f.path("protected/keep.txt"));
    for right in [
        AccessFs::RemoveFile,
        AccessFs::WriteFile,
        AccessFs::Truncate,
        AccessFs::MakeReg,
        AccessFs::Refer,
    ] {
        assert!(
            !protected.contains(right),
            "{right:?} granted in protected/"
        );
    }
    assert!(
        protected.contains(AccessFs::ReadFile),
        "reading stays allowed"
    );
    assert!(plan_denies(
        &plan,
        CoreAction::FsDelete,
        &f.path("protected/keep.txt")
    ));
    assert!(plan_denies(
        &plan,
        CoreAction::FsDelete,
        &f.path("protected/sub/x")
    ));
    assert!(!plan_denies(
        &plan,
        CoreAction::FsDelete,
        &f.path("ws/src/x")
    ));
    // The directory above a protected tree cannot hold directory rights for its children.
    assert!(!granted(&plan, &f.path("direct-child")).contains(AccessFs::MakeReg));
    assert!(
        !granted(&plan, &f.path("state/x")).contains(AccessFs::ReadFile),
        "secops' own files are fixed: nothing granted below them"
    );
}

#[test]
fn secrets_are_not_readable_but_their_neighbours_are() {
    let f = fixture("");
    let plan = f.plan();
    assert!(!granted(&plan, &f.path("home/.ssh/id_rsa")).contains(AccessFs::ReadFile));
    assert!(!granted(&plan, &f.path("home/.ssh")).contains(AccessFs::ReadDir));
    assert!(granted(&plan, &f.path("home/notes")).contains(AccessFs::ReadFile));
    assert!(plan_denies(
        &plan,
        CoreAction::SecretRead,
        &f.path("home/.ssh/id_rsa")
    ));
    assert!(!plan_denies(
        &plan,
        CoreAction::SecretRead,
        &f.path("home/notes")
    ));
}

#[test]
fn an_escalated_binary_is_denied_and_its_neighbours_run() {
    let f = fixture("");
    let plan = f.plan();
    assert!(!granted(&plan, &f.path("bin/nc")).contains(AccessFs::Execute));
    assert!(granted(&plan, &f.path("bin/tool")).contains(AccessFs::Execute));
    assert!(granted(&plan, &f.path("ws/a.out")).contains(AccessFs::Execute));
}

#[test]
fn tcp_ports_come_from_a_port_expressible_allowlist() {
    let f = fixture("");
    assert_eq!(
        f.plan().tcp_connect,
        Some(Vec::new()),
        "egress: deny, nothing listed"
    );
    let f = fixture(
        "egress:\n  a:\n    allow:\n      - cidr: 10.0.0.0/8\n        ports: [443, \"8000-8001\"]\n",
    );
    assert_eq!(f.plan().tcp_connect, Some(vec![53, 443, 8000, 8001]));
    let f = fixture("egress:\n  a:\n    allow:\n      - cidr: 10.0.0.0/8\n");
    let plan = f.plan();
    assert_eq!(plan.tcp_connect, None);
    assert!(plan.tcp_why.contains("every port"), "{}", plan.tcp_why);
}

#[test]
fn a_root_wildcard_is_reported_as_not_expressible() {
    let source = "version: 1\nagents:\n  - name: a\n    workspace: /nonexistent/ws\n\
                  rules:\n  - id: hooks\n    actions: [fs:write]\n    \
                  paths: [\"**/.git/hooks/**\"]\n    verdict: deny\n    risk: high\n";
    let policy = parse_policy_str(Path::new("h.yaml"), source).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(Arc::new(policy));
    let plan = compile(&engine, engine.agent_index("a").expect("a"), &[]);
    assert!(
        plan.unexpressed.iter().any(|u| u.contains("rule hooks")),
        "{:?}",
        plan.unexpressed
    );
    // `/**` is no wildcard at the root: the probes answer it.
    let source = source.replace("**/.git/hooks/**", "/**");
    let policy = parse_policy_str(Path::new("h.yaml"), &source).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(Arc::new(policy));
    let plan = compile(&engine, engine.agent_index("a").expect("a"), &[]);
    assert!(plan.unexpressed.is_empty(), "{:?}", plan.unexpressed);
    assert!(!granted(&plan, Path::new("/etc/x")).contains(AccessFs::WriteFile));
}
