//! secops in a container: the daemon, `secops run` and the agent run inside a cgroup
//! namespace whose cgroup2 mount shows a cgroup below the hierarchy's root as "/". The
//! programs count cgroup levels from the real root, so the daemon must too
//! (`kernel::fs::cgroup_level`): an agent there is still enforced (its connect is denied)
//! and a process outside every agent is untouched.

use std::net::TcpListener;
use std::process::Command;

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::need_root;
use secops_host_tests::namespace::CgroupNamespace;

const SECOPS: &str = env!("CARGO_BIN_EXE_secops-under-test");
const PROBE: &str = env!("CARGO_BIN_EXE_secops-netprobe");

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn an_agent_in_a_cgroup_namespace_is_enforced_and_others_are_not() {
    let test = "an_agent_in_a_cgroup_namespace_is_enforced_and_others_are_not";
    if !need_root(test) {
        return;
    }
    if !have("unshare") || !have("nsenter") {
        println!("skipped: {test}: util-linux's unshare and nsenter are needed");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let target = format!("127.0.0.1:{port}");
    let namespace = CgroupNamespace::start();
    // Inside, "/" is the namespace's cgroup: the level of what the daemon makes there is
    // one more than paths inside say.
    let inside = namespace
        .entry()
        .command(std::path::Path::new("cat"))
        .arg("/proc/self/cgroup")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let cgroups = String::from_utf8_lossy(&inside.stdout).into_owned();
    assert!(
        cgroups.lines().any(|l| l == "0::/"),
        "the namespace's root is its own cgroup: {cgroups}"
    );
    let policy = "version: 1\ndefaults:\n  egress: deny\n\
                  agents:\n  - name: boxed\n    workspace: /tmp\n    autonomy: semi\n";
    let daemon = Daemon::start_in_namespace(
        &Binaries {
            secops: SECOPS.into(),
            probe: PROBE.into(),
        },
        policy,
        namespace.entry(),
    );
    let agent = daemon.agent("boxed", &["tcp", &target]);
    assert_eq!(
        String::from_utf8_lossy(&agent.stdout).trim(),
        format!("tcp {target} errno EPERM"),
        "the agent's connect is denied by the egress programs\nstderr: {}\ndaemon log:\n{}",
        String::from_utf8_lossy(&agent.stderr),
        daemon.log()
    );
    let outside = Command::new(PROBE)
        .args(["tcp", &target])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout).trim(),
        format!("tcp {target} ok"),
        "a process in no agent cgroup is untouched"
    );
    let in_namespace = namespace
        .entry()
        .command(std::path::Path::new(PROBE))
        .args(["tcp", &target])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        String::from_utf8_lossy(&in_namespace.stdout).trim(),
        format!("tcp {target} ok"),
        "nor is a non-agent inside the namespace"
    );
}
