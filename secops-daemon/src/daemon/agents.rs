//! The agents the policy defines, as the kernel sees them: a cgroup below the secops root
//! for each, an entry in the agents map, and an egress allowlist compiled into the tries.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use secops_common::AutonomyLevel;

use super::dns::{AgentRef, DnsLayer};
use crate::cgroups::CgroupDir;
use crate::enforce::{agent_entry, compile_allowlist, egress_enforced, HostAddrs};
use crate::kernel::KernelMaps;
use crate::policy::Policy;

/// One agent's place in the kernel.
#[derive(Clone, Debug)]
pub(crate) struct AgentSlot {
    pub(crate) name: String,
    pub(crate) index: u32,
    pub(crate) cgroup: PathBuf,
    pub(crate) cgroup_id: u64,
    pub(crate) autonomy: AutonomyLevel,
    pub(crate) egress_enforced: bool,
    /// Still in the policy. An agent dropped from the policy keeps its slot with an empty
    /// allowlist while its cgroup exists: its processes are not set free by a reload.
    pub(crate) in_policy: bool,
}

/// Agent indices stay the same for a name across reloads, so events and map entries in
/// flight during a reload still name the right agent.
#[derive(Debug, Default)]
pub(crate) struct AgentTable {
    slots: BTreeMap<String, AgentSlot>,
    next_index: u32,
}

impl AgentTable {
    pub(crate) fn slots(&self) -> impl Iterator<Item = &AgentSlot> {
        self.slots.values()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&AgentSlot> {
        self.slots.get(name)
    }

    pub(crate) fn by_cgroup_id(&self, cgroup_id: u64) -> Option<&AgentSlot> {
        self.slots.values().find(|s| s.cgroup_id == cgroup_id)
    }

    pub(crate) fn by_index(&self, index: u32) -> Option<&AgentSlot> {
        self.slots.values().find(|s| s.index == index)
    }

    /// Makes the cgroups and kernel maps say what `policy` says: creates missing agent
    /// cgroups, writes every agent's entry and allowlist, and keeps dropped agents
    /// contained (empty allowlist). Host names resolve through `hosts`, and through what
    /// each agent's own lookups answered (`dns`: its listener is made before its entry names
    /// it; an agent without an allowlist to hold, or gone from the policy, has none).
    pub(crate) fn sync(
        &mut self,
        policy: &Policy,
        root: &CgroupDir,
        maps: &mut KernelMaps,
        hosts: &HostAddrs,
        dns: &DnsLayer,
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
            let egress_enforced = egress_enforced(policy, &agent.name);
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
            let dns_port = if slot.in_policy && slot.egress_enforced {
                let agent = AgentRef {
                    index: slot.index,
                    name: slot.name.clone(),
                    cgroup_id: slot.cgroup_id,
                };
                dns.port_for(&agent, maps)
            } else {
                dns.close(slot.index, maps);
                0
            };
            let allow = if slot.in_policy {
                compile_allowlist(policy, &slot.name, hosts, dns.active())
            } else {
                Vec::new()
            };
            maps.replace_egress(slot.index, &allow)
                .with_context(|| format!("writing the egress allowlist of agent {}", slot.name))?;
            let entry = agent_entry(slot.index, slot.autonomy, slot.egress_enforced, dns_port);
            maps.upsert_agent(slot.cgroup_id, &entry)
                .with_context(|| format!("writing the kernel entry of agent {}", slot.name))?;
        }
        for name in dropped {
            if let Some(slot) = self.slots.remove(&name) {
                maps.remove_agent(slot.cgroup_id)?;
                maps.replace_egress(slot.index, &[])?;
                dns.close(slot.index, maps);
            }
        }
        dns.forget_stale(maps);
        Ok(())
    }
}
