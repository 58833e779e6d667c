//! Every policy file shipped in `policies/` loads and validates on its own, so a worked
//! example can never rot.

use secops_daemon::engine::Engine;
use secops_daemon::policy::load_policy;
use secops_host_tests::{workspace_root, yaml_files};

#[test]
fn every_shipped_policy_file_validates() {
    let files = yaml_files(&workspace_root().join("policies"));
    assert!(
        files.len() >= 5,
        "expected the default policy, its includes and examples; found {files:?}"
    );
    let mut failures = Vec::new();
    for file in &files {
        match load_policy(file) {
            Ok(policy) => {
                // And compiles into an engine.
                let _ = Engine::new(std::sync::Arc::new(policy));
            }
            Err(errors) => failures.push(errors.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_default_policy_defines_an_agent_and_default_deny_egress() {
    let policy = load_policy(&workspace_root().join("policies/default.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!policy.agents.is_empty());
    assert_eq!(
        policy.defaults.egress,
        secops_daemon::policy::EgressDefault::Deny
    );
    assert!(
        policy.rules.iter().any(|r| r.hard),
        "the default policy has hard rules"
    );
}
