//! The agents the policy defines, as the kernel sees them: a cgroup below the secops root
//! for each, an entry in the agents map, and an egress allowlist compiled into the tries.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use ipnet::IpNet;
use secops_common::kernel::{Agent as KernelAgent, AGENT_EGRESS_ENFORCED, PROTO_TCP, PROTO_UDP};
use secops_common::AutonomyLevel;

use crate::cgroups::CgroupDir;
use crate::kernel::{EgressAllow, KernelMaps, PortRule};
use crate::policy::{EgressDefault, EgressTarget, Policy};

/// One agent's place in the kernel.
#[derive(Clone, Debug)]
pub struct AgentSlot {
    pub name: String,
    pub index: u32,
    pub cgroup: PathBuf,
    pub cgroup_id: u64,
    pub autonomy: AutonomyLevel,
    pub egress_enforced: bool,
    /// Still in the policy. An agent dropped from the policy keeps its slot with an empty
    /// allowlist while its cgroup exists: its processes are not set free by a reload.
    pub in_policy: bool,
}

/// Agent indices stay the same for a name across reloads, so events and map entries in
/// flight during a reload still name the right agent.
#[derive(Debug, Default)]
pub struct AgentTable {
    slots: BTreeMap<String, AgentSlot>,
    next_index: u32,
}

/// Resolved addresses of the host names in egress allowlists.
pub type HostAddrs = BTreeMap<String, Vec<IpAddr>>;

fn autonomy_code(level: AutonomyLevel) -> u8 {
    use secops_common::kernel::*;
    match level {
        AutonomyLevel::Full => AUTONOMY_FULL,
        AutonomyLevel::Semi => AUTONOMY_SEMI,
        AutonomyLevel::Supervised => AUTONOMY_SUPERVISED,
        AutonomyLevel::Locked => AUTONOMY_LOCKED,
    }
}

impl AgentTable {
    pub fn slots(&self) -> impl Iterator<Item = &AgentSlot> {
        self.slots.values()
    }

    pub fn by_name(&self, name: &str) -> Option<&AgentSlot> {
        self.slots.get(name)
    }

    pub fn by_cgroup_id(&self, cgroup_id: u64) -> Option<&AgentSlot> {
        self.slots.values().find(|s| s.cgroup_id == cgroup_id)
    }

    pub fn by_index(&self, index: u32) -> Option<&AgentSlot> {
        self.slots.values().find(|s| s.index == index)
    }

    /// Makes the cgroups and kernel maps say what `policy` says: creates missing agent
    /// cgroups, writes every agent's entry and allowlist, and keeps dropped agents
    /// contained (empty allowlist). Host names resolve through `hosts`.
    pub fn sync(
        &mut self,
        policy: &Policy,
        root: &CgroupDir,
        maps: &mut KernelMaps,
        hosts: &HostAddrs,
    ) -> anyhow::Result<()> {
        for slot in self.slots.values_mut() {
            slot.in_policy = false;
        }
        for agent in &policy.agents {
            let dir = CgroupDir::create(root, &agent.cgroup)
                .with_context(|| format!("creating the cgroup of agent {}", agent.name))?;
            let cgroup_id = dir
                .id()
                .with_context(|| format!("reading the cgroup id of agent {}", agent.name))?;
            let egress_enforced = policy.egress.contains_key(&agent.name)
                || policy.defaults.egress == EgressDefault::Deny;
            let index = match self.slots.get(&agent.name) {
                Some(slot) => slot.index,
                None => {
                    self.next_index += 1;
                    self.next_index - 1
                }
            };
            self.slots.insert(
                agent.name.clone(),
                AgentSlot {
                    name: agent.name.clone(),
                    index,
                    cgroup: dir.path().to_path_buf(),
                    cgroup_id,
                    autonomy: agent.autonomy,
                    egress_enforced,
                    in_policy: true,
                },
            );
        }
        // Agents gone from the policy: keep them contained while their cgroup lives.
        let mut dropped = Vec::new();
        for slot in self.slots.values_mut().filter(|s| !s.in_policy) {
            if slot.cgroup.exists() {
                slot.egress_enforced = true;
                tracing::warn!(agent = %slot.name, "agent no longer in the policy; its egress stays denied while its cgroup exists");
            } else {
                dropped.push(slot.name.clone());
            }
        }
        for slot in self.slots.values() {
            let allow = if slot.in_policy {
                compile_allowlist(policy, &slot.name, hosts)
            } else {
                Vec::new()
            };
            maps.replace_egress(slot.index, &allow)
                .with_context(|| format!("writing the egress allowlist of agent {}", slot.name))?;
            let flags = if slot.egress_enforced {
                AGENT_EGRESS_ENFORCED
            } else {
                0
            };
            let entry = KernelAgent {
                agent_index: slot.index,
                autonomy: autonomy_code(slot.autonomy),
                flags,
                pad: 0,
            };
            maps.upsert_agent(slot.cgroup_id, &entry)
                .with_context(|| format!("writing the kernel entry of agent {}", slot.name))?;
        }
        for name in dropped {
            if let Some(slot) = self.slots.remove(&name) {
                maps.remove_agent(slot.cgroup_id)?;
                maps.replace_egress(slot.index, &[])?;
            }
        }
        Ok(())
    }
}

/// The exact host names the policy's allowlists name (wildcards cannot be resolved).
pub fn allowlist_hosts(policy: &Policy) -> Vec<String> {
    let mut names: Vec<String> = policy
        .egress
        .values()
        .flat_map(|e| e.allow.iter())
        .filter_map(|entry| match &entry.target {
            EgressTarget::Host(pattern) => pattern.exact_name().map(str::to_owned),
            EgressTarget::Cidr(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One agent's allowlist in the kernel's terms. TCP (and connected UDP) may reach the
/// allowlist's networks on its ports; UDP may reach only the resolvers' port 53, which is the
/// engine's rule too (`net:send` to resolvers only).
pub fn compile_allowlist(policy: &Policy, agent: &str, hosts: &HostAddrs) -> Vec<EgressAllow> {
    let Some(egress) = policy.egress.get(agent) else {
        return Vec::new();
    };
    let mut allow = Vec::new();
    for entry in &egress.allow {
        let ports: Vec<PortRule> = if entry.ports.is_empty() {
            vec![PortRule::new(0, u16::MAX, PROTO_TCP)]
        } else {
            entry
                .ports
                .iter()
                .map(|r| PortRule::new(r.lo, r.hi, PROTO_TCP))
                .collect()
        };
        match &entry.target {
            EgressTarget::Cidr(net) => allow.push(EgressAllow {
                network: *net,
                ports,
            }),
            EgressTarget::Host(pattern) => {
                let addrs = pattern
                    .exact_name()
                    .and_then(|n| hosts.get(n))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                for addr in addrs {
                    allow.push(EgressAllow {
                        network: IpNet::from(addr.to_canonical()),
                        ports: ports.clone(),
                    });
                }
            }
        }
    }
    for resolver in &egress.dns_resolvers {
        allow.push(EgressAllow {
            network: IpNet::from(*resolver),
            ports: vec![PortRule::new(53, 53, PROTO_TCP | PROTO_UDP)],
        });
    }
    allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy_str;
    use std::path::Path;

    #[test]
    fn allowlists_compile_to_tcp_ranges_resolvers_and_resolved_hosts() {
        let policy = parse_policy_str(
            Path::new("p.yaml"),
            "agents:\n  - {name: a, workspace: /w}\negress:\n  a:\n    allow:\n\
             \x20     - {cidr: 127.0.0.0/8, ports: [\"8000-8100\", 22]}\n\
             \x20     - {cidr: \"::1/128\"}\n\
             \x20     - {host: pkg.test, ports: [443]}\n\
             \x20     - {host: \"*.wild.test\", ports: [443]}\n\
             \x20   dns_resolvers: [127.0.0.53]\n",
        )
        .unwrap();
        assert_eq!(allowlist_hosts(&policy), ["pkg.test"]);
        let hosts: HostAddrs = [(
            "pkg.test".to_owned(),
            vec![
                "10.9.8.7".parse().unwrap(),
                "::ffff:10.9.8.6".parse().unwrap(),
            ],
        )]
        .into();
        let allow = compile_allowlist(&policy, "a", &hosts);
        let shown: Vec<String> = allow
            .iter()
            .map(|a| {
                format!(
                    "{} {:?}",
                    a.network,
                    a.ports
                        .iter()
                        .map(|p| (p.lo, p.hi, p.protocols))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "127.0.0.0/8 [(8000, 8100, 1), (22, 22, 1)]",
                "::1/128 [(0, 65535, 1)]",
                "10.9.8.7/32 [(443, 443, 1)]",
                "10.9.8.6/32 [(443, 443, 1)]",
                "127.0.0.53/32 [(53, 53, 3)]",
            ]
        );
        assert!(compile_allowlist(&policy, "nobody", &hosts).is_empty());
    }
}
