//! An agent's entry in the kernel's agents map (`secops_agents`, keyed by cgroup id).

use secops_common::kernel::{Agent as KernelAgent, AGENT_EGRESS_ENFORCED};
use secops_common::AutonomyLevel;

/// The entry for the agent with kernel index `index`. `dns_port`: the daemon's DNS listener
/// for it (0: its DNS is not redirected).
pub(crate) fn agent_entry(
    index: u32,
    autonomy: AutonomyLevel,
    egress_enforced: bool,
    dns_port: u16,
) -> KernelAgent {
    KernelAgent {
        agent_index: index,
        autonomy: autonomy_code(autonomy),
        flags: if egress_enforced {
            AGENT_EGRESS_ENFORCED
        } else {
            0
        },
        dns_port,
    }
}

fn autonomy_code(level: AutonomyLevel) -> u8 {
    use secops_common::kernel::*;
    match level {
        AutonomyLevel::Full => AUTONOMY_FULL,
        AutonomyLevel::Semi => AUTONOMY_SEMI,
        AutonomyLevel::Supervised => AUTONOMY_SUPERVISED,
        AutonomyLevel::Locked => AUTONOMY_LOCKED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_index_autonomy_the_egress_flag_and_the_dns_port() {
        let e = agent_entry(3, AutonomyLevel::Locked, true, 40053);
        assert_eq!(e.agent_index, 3);
        assert_eq!(e.autonomy, secops_common::kernel::AUTONOMY_LOCKED);
        assert_eq!(e.flags, AGENT_EGRESS_ENFORCED);
        assert_eq!(e.dns_port, 40053);
        assert_eq!(agent_entry(0, AutonomyLevel::Full, false, 0).flags, 0);
    }
}
