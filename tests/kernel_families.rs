//! Program families load and attach on their own: on this host the kernel refuses BPF LSM
//! programs (EPERM), so asking for them too must leave egress enforcing and the tracepoints
//! attached, with the LSM family recorded as failed and why. A strict load that fails, and a
//! start that is abandoned, leave nothing pinned that was not pinned before.

use std::net::{SocketAddr, TcpListener};

use secops_common::kernel::{Agent, AGENT_EGRESS_ENFORCED, MAPS};
use secops_daemon::kernel::{probe, Family, FamilyState, Kernel, KernelError, LoadOptions};
use secops_host_tests::kernel::{
    errno_name, make_agent, need_root, run_child, Op, TestCgroup, TestPinDir,
};

const AGENT_INDEX: u32 = 5;

/// Whether this kernel refuses LSM programs (the case these tests are about); prints a skip
/// line otherwise.
fn lsm_refused(test: &str) -> bool {
    if !need_root(test) {
        return false;
    }
    let probed = probe();
    if probed.bpf_lsm.active {
        println!("skipped: {test}: BPF LSM programs load on this kernel, so no family fails here");
        return false;
    }
    true
}

fn with_lsm() -> LoadOptions {
    LoadOptions {
        lsm: true,
        files: false,
        ..LoadOptions::default()
    }
}

fn pins_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        })
        .unwrap_or_default()
}

#[test]
fn a_refused_family_leaves_the_others_working() {
    if !lsm_refused("a_refused_family_leaves_the_others_working") {
        return;
    }
    let denied = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = denied.local_addr().map(|a| a.port()).unwrap_or(0);
    let cgroups = TestCgroup::new(&["agent", "other"]);
    let pins = TestPinDir::new();
    let mut kernel =
        Kernel::load_available(&pins.path, &with_lsm()).unwrap_or_else(|e| panic!("load: {e}"));
    match kernel.family_state(Family::Lsm) {
        FamilyState::Failed(failure) => {
            assert_eq!(failure.step, "loading");
            assert!(failure.program.is_some(), "{failure:?}");
            assert!(
                failure.reason.contains("Operation not permitted")
                    || failure.reason.contains("EPERM")
                    || failure.reason.contains("os error 1)"),
                "the kernel's refusal is the reason: {failure}"
            );
            assert!(!failure.reason.contains('\n'), "one line: {failure}");
        }
        other => panic!("the LSM family must fail on this kernel: {other:?}"),
    }
    assert_eq!(
        kernel.family_state(Family::Files),
        &FamilyState::NotRequested
    );
    kernel
        .attach_egress(&cgroups.path)
        .unwrap_or_else(|e| panic!("attach_egress: {e}"));
    kernel
        .attach_tracepoints()
        .unwrap_or_else(|e| panic!("attach_tracepoints: {e}"));
    assert!(kernel.family_state(Family::Egress).is_attached());
    assert!(kernel.family_state(Family::Exec).is_attached());
    // Attaching a family that never loaded changes nothing and keeps its reason.
    assert!(kernel.attach_lsm().is_ok_and(|links| links.is_empty()));
    assert!(matches!(
        kernel.family_state(Family::Lsm),
        FamilyState::Failed(_)
    ));

    let agent_dir = cgroups.child("agent");
    make_agent(
        kernel.maps_mut(),
        &cgroups.path,
        &agent_dir,
        Agent {
            agent_index: AGENT_INDEX,
            flags: AGENT_EGRESS_ENFORCED,
            ..Agent::default()
        },
    );
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let agent = run_child(Some(&agent_dir), &[Op::ConnectTcp(target)]);
    assert_eq!(
        errno_name(agent.results[0]),
        "EPERM",
        "egress still enforces for the agent: {:?}",
        agent.results
    );
    let other = run_child(Some(&cgroups.child("other")), &[Op::ConnectTcp(target)]);
    assert_eq!(other.results, [0], "a non-agent is untouched");
    kernel.detach_and_unpin().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_strict_load_that_fails_leaves_nothing_pinned() {
    if !lsm_refused("a_strict_load_that_fails_leaves_nothing_pinned") {
        return;
    }
    let pins = TestPinDir::new();
    match Kernel::load(&pins.path, &with_lsm()) {
        Err(KernelError::Family { family, failure }) => {
            assert_eq!(family, Family::Lsm);
            assert_eq!(failure.step, "loading");
        }
        other => panic!("expected the LSM family's failure, got {other:?}"),
    }
    assert!(
        !pins.path.exists(),
        "the pin directory this load made is gone; left: {:?}",
        pins_in(&pins.path)
    );
}

#[test]
fn an_abandoned_start_unpins_only_what_it_pinned() {
    if !need_root("an_abandoned_start_unpins_only_what_it_pinned") {
        return;
    }
    let cgroups = TestCgroup::new(&[]);
    let pins = TestPinDir::new();
    // An earlier daemon: egress only, attached and pinned.
    let mut earlier = Kernel::load(
        &pins.path,
        &LoadOptions {
            exec: false,
            files: false,
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("load: {e}"));
    earlier
        .attach_egress(&cgroups.path)
        .unwrap_or_else(|e| panic!("{e}"));
    drop(earlier);
    let before = pins_in(&pins.path);
    assert!(
        before.iter().any(|p| p == "link_secops_connect4"),
        "{before:?}"
    );
    assert_eq!(
        before.iter().filter(|p| !p.starts_with("link_")).count(),
        MAPS.len()
    );

    // A new start adopts those and adds the tracepoint links, then fails.
    let mut start =
        Kernel::load(&pins.path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    start
        .attach_egress(&cgroups.path)
        .unwrap_or_else(|e| panic!("{e}"));
    start.attach_tracepoints().unwrap_or_else(|e| panic!("{e}"));
    assert!(pins_in(&pins.path).len() > before.len());
    start.abandon_start();
    assert_eq!(
        pins_in(&pins.path),
        before,
        "what the earlier daemon pinned stays, what this start added is gone"
    );
}
