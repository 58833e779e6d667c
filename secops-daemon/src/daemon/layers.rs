//! What each kernel layer does on this kernel, as the daemon runs it: what `secops status`
//! and the start-up log say, so no layer is reported enforcing when it is not; and the
//! check of a policy's `require:` against it.

use crate::api::CapabilityStatus;
use crate::kernel::{Capabilities, Family, FamilyState, Kernel};
use crate::policy::Layer;

/// The key of the ring buffer in the capability report (not a layer a policy can require).
const RING_BUFFER: &str = "ring-buffer";

/// What each kernel layer does here, as the daemon runs it: from where each program family
/// stands (a family the verifier refused, or that did not attach, says why in one line).
pub(crate) fn capability_report(probed: &Capabilities, kernel: &Kernel) -> Vec<CapabilityStatus> {
    let lsm = kernel.family_state(Family::Lsm);
    vec![
        status(
            Layer::Egress.as_str(),
            "egress allowlist",
            family_detail(
                kernel.family_state(Family::Egress),
                "cgroup connect4/6 and sendmsg4/6 attached to the secops root cgroup",
                &probed.cgroup_sock_addr.reason,
            ),
        ),
        status(
            Layer::Events.as_str(),
            "event tagging",
            events_detail(probed, kernel),
        ),
        CapabilityStatus {
            name: "ring buffer".to_owned(),
            key: RING_BUFFER.to_owned(),
            active: probed.ring_buffer.active,
            detail: probed.ring_buffer.reason.clone(),
        },
        status(
            Layer::Lsm.as_str(),
            "synchronous file/exec deny (BPF LSM)",
            family_detail(
                lsm,
                "file deletes/renames/links/truncates/writes, secret reads, exec (by inode), raw \
                 sockets, connect backstop and self-protection enforced by BPF LSM programs",
                &probed.bpf_lsm.reason,
            ),
        ),
        landlock_status(lsm.is_attached(), crate::launcher::landlock::kernel_abi()),
    ]
}

/// The Landlock layer: what `secops run` applies to each agent on this kernel, by ABI. It
/// stands by where BPF LSM enforces the files (a Landlock domain cannot be widened by an
/// approval; BPF LSM grants can).
pub(crate) fn landlock_status(lsm_attached: bool, abi: Option<i32>) -> CapabilityStatus {
    let (active, detail) = match abi {
        None => (
            false,
            "not enforcing: the kernel has no Landlock (or it is not in the boot's lsm= list)"
                .to_owned(),
        ),
        Some(abi) if lsm_attached => (
            false,
            format!("standing by: BPF LSM enforces files here (Landlock ABI {abi} is available)"),
        ),
        Some(abi) => (
            true,
            format!(
                "ABI {abi}, applied by `secops run` to each agent before exec: {}; escalations are denied on this layer (approvals cannot widen running agents)",
                crate::launcher::landlock::abi_features(abi)
            ),
        ),
    };
    status(Layer::Landlock.as_str(), "landlock", (active, detail))
}

fn status(key: &str, name: &str, (active, detail): (bool, String)) -> CapabilityStatus {
    CapabilityStatus {
        name: name.to_owned(),
        key: key.to_owned(),
        active,
        detail,
    }
}

/// Active with `doing` when attached; else why not: the kernel's refusal, or the probe's
/// reason for not asking.
fn family_detail(state: &FamilyState, doing: &str, not_probed: &str) -> (bool, String) {
    match state {
        FamilyState::Attached => (true, doing.to_owned()),
        FamilyState::Failed(failure) => (false, format!("not enforcing: {failure}")),
        FamilyState::Loaded => (false, "not enforcing: loaded but not attached".to_owned()),
        FamilyState::NotRequested => (false, format!("not enforcing: {not_probed}")),
    }
}

/// Exec tagging always comes from the exec tracepoints; deletes and renames from BPF LSM
/// where it is attached, else from the file tracepoints (observation only).
fn events_detail(probed: &Capabilities, kernel: &Kernel) -> (bool, String) {
    let (active, detail) = family_detail(
        kernel.family_state(Family::Exec),
        "exec and exit tracepoints attached",
        &probed.tracepoints.reason,
    );
    if !active {
        return (false, detail);
    }
    if kernel.family_state(Family::Lsm).is_attached() {
        return (
            true,
            format!("{detail} (deletes and renames come from BPF LSM)"),
        );
    }
    match kernel.family_state(Family::Files) {
        FamilyState::Attached => (
            true,
            format!("{detail}; unlink/rmdir and rename tracepoints attached (observation only)"),
        ),
        FamilyState::Failed(failure) => (
            false,
            format!("{detail}, but deletes and renames are not seen: {failure}"),
        ),
        _ => (
            false,
            format!(
                "{detail}, but deletes and renames are not seen (no BPF LSM, no file tracepoints)"
            ),
        ),
    }
}

/// The layers of `required` that are not active, each with why: empty when all are.
pub(crate) fn missing_layers(
    capabilities: &[CapabilityStatus],
    required: &[Layer],
) -> Vec<(Layer, String)> {
    required
        .iter()
        .filter_map(
            |&layer| match capabilities.iter().find(|c| c.key == layer.as_str()) {
                Some(c) if c.active => None,
                Some(c) => Some((layer, c.detail.clone())),
                None => Some((layer, "this daemon does not run it".to_owned())),
            },
        )
        .collect()
}

/// One line per missing layer: `lsm (why)`.
pub(crate) fn describe_missing(missing: &[(Layer, String)]) -> String {
    missing
        .iter()
        .map(|(layer, why)| format!("{layer} ({why})"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capability(key: &str, active: bool) -> CapabilityStatus {
        CapabilityStatus {
            name: key.to_owned(),
            key: key.to_owned(),
            active,
            detail: format!("{key} detail"),
        }
    }

    #[test]
    fn a_required_layer_is_missing_when_inactive_or_absent() {
        let capabilities = [capability("egress", true), capability("lsm", false)];
        assert!(missing_layers(&capabilities, &[Layer::Egress]).is_empty());
        let missing = missing_layers(&capabilities, &[Layer::Lsm, Layer::Egress, Layer::Dns]);
        assert_eq!(
            missing,
            vec![
                (Layer::Lsm, "lsm detail".to_owned()),
                (Layer::Dns, "this daemon does not run it".to_owned())
            ]
        );
        assert_eq!(
            describe_missing(&missing),
            "lsm (lsm detail); dns (this daemon does not run it)"
        );
    }
}
