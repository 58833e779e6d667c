//! The capability probe on this kernel: every layer reports active or a reason.

use secops_daemon::kernel::probe;
use secops_host_tests::kernel::need_root;

#[test]
fn probe_reports_every_layer_with_a_reason() {
    if !need_root("probe_reports_every_layer_with_a_reason") {
        return;
    }
    let caps = probe();
    eprintln!("{caps}");
    for c in [
        &caps.tracepoints,
        &caps.cgroup_sock_addr,
        &caps.ring_buffer,
        &caps.bpf_lsm,
    ] {
        assert!(!c.reason.is_empty(), "{c:?}");
    }
    // What secops needs for issue 3; the host integration tests rely on these too.
    for (name, c) in [
        ("tracepoints", &caps.tracepoints),
        ("cgroup sock_addr", &caps.cgroup_sock_addr),
        ("ring buffer", &caps.ring_buffer),
    ] {
        if !c.active {
            eprintln!("skipped: {name} unavailable on this kernel: {}", c.reason);
        }
    }
    if !caps.bpf_lsm.active {
        // Honest about why: either bpf is missing from the LSM list, or it is there and
        // loading still failed (with the errno).
        assert!(
            caps.bpf_lsm.reason.contains("not in the active LSM list")
                || caps
                    .bpf_lsm
                    .reason
                    .contains("in LSM list but loading failed")
                || caps.bpf_lsm.reason.contains("securityfs"),
            "{}",
            caps.bpf_lsm.reason
        );
    }
}
