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

/// The README's policy example is a policy the parser takes as it stands (its include pointed
/// at the source tree's copy of what the package installs in /etc/secops/common).
#[test]
fn the_readme_policy_example_validates() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let section = &readme[readme.find("\n## Policy\n").expect("a Policy section")..];
    let start = section.find("```yaml\n").expect("a YAML example") + "```yaml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let common = workspace_root().join("policies/common/");
    let example = example.replace("/etc/secops/common/", common.to_str().unwrap());
    let dir = std::env::temp_dir().join(secops_host_tests::kernel::unique_name());
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(&file, &example).unwrap();
    let loaded = load_policy(&file);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(errors) = loaded {
        panic!("the README's example does not validate:\n{errors}\n{example}");
    }
}
