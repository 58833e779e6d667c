//! What each kernel layer does on this kernel, as the daemon runs it: what `secops status`
//! and the start-up log say, so no layer is reported enforcing when it is not.

use crate::api::CapabilityStatus;
use crate::kernel::Capabilities;

/// The name of the BPF LSM layer in the capability report.
pub(crate) const BPF_LSM_LAYER: &str = "synchronous file/exec deny (BPF LSM)";

/// What each kernel layer does here, as the daemon runs it.
pub(crate) fn capability_report(
    probed: &Capabilities,
    egress_attached: bool,
    tracepoints_attached: bool,
    lsm_attached: bool,
) -> Vec<CapabilityStatus> {
    let layer = |name: &str, active: bool, detail: String| CapabilityStatus {
        name: name.to_owned(),
        active,
        detail,
    };
    vec![
        layer(
            "egress allowlist",
            egress_attached,
            if egress_attached {
                "cgroup connect4/6 and sendmsg4/6 attached to the secops root cgroup".into()
            } else {
                probed.cgroup_sock_addr.reason.clone()
            },
        ),
        layer(
            "event tagging",
            tracepoints_attached,
            if tracepoints_attached {
                if probed.bpf_lsm.active {
                    "exec and exit tracepoints attached (deletes and renames come from BPF LSM)"
                        .into()
                } else {
                    "exec, exit, unlink/rmdir, rename tracepoints attached (observation only)"
                        .into()
                }
            } else {
                probed.tracepoints.reason.clone()
            },
        ),
        layer(
            "ring buffer",
            probed.ring_buffer.active,
            probed.ring_buffer.reason.clone(),
        ),
        layer(
            BPF_LSM_LAYER,
            lsm_attached,
            if lsm_attached {
                "file deletes/renames/links/truncates/writes, secret reads, exec (by inode), raw \
                 sockets, connect backstop and self-protection enforced by BPF LSM programs"
                    .into()
            } else if probed.bpf_lsm.active {
                "not enforcing: the LSM programs did not attach (see the daemon log)".into()
            } else {
                format!("not enforcing: {}", probed.bpf_lsm.reason)
            },
        ),
    ]
}
