//! The enforcement compiler: a policy (and the filesystem it names) turned into what the
//! kernel programs decide by, as plain values. Nothing here touches a BPF map or a cgroup;
//! the daemon writes these values into the kernel (`daemon/enforcement.rs`), so every part can
//! be unit-tested without root.
//!
//! - [`agents`]: an agent's entry in the agents map;
//! - [`egress`]: each agent's allowlist for the egress tries, and what a resolved name opens;
//! - [`names`]: the addresses names resolved to for each agent, as kernel entries;
//! - [`files`]: file, exec and socket-file rules as (dev, inode) entries for the LSM programs;
//! - [`followed`]: protected objects held open, so protection follows them when they move;
//! - [`count_slots`]: which (agent, rule) each counter of allowed deletes belongs to;
//! - [`grants`]: an approved ticket as `secops_grants` keys, and a used grant read back;
//! - [`inode`]: (dev, inode) as the kernel numbers them.

mod agents;
mod count_slots;
mod egress;
mod files;
mod followed;
mod grants;
mod inode;
pub(crate) mod landlock;
mod names;

use std::path::{Path, PathBuf};

pub(crate) use agents::agent_entry;
pub(crate) use count_slots::{CountSlots, CountSlotsError, SlotOwner};
pub(crate) use egress::{
    allowlist_hosts, compile_allowlist, egress_enforced, name_dns_types, name_ports, HostAddrs,
};
pub(crate) use files::{AgentTarget, BuiltinProtection, CompiledFiles, BUILTIN_RULE_ID};
pub(crate) use followed::{Followed, Move};
pub(crate) use grants::{grant_keys, grant_value, granted_endpoint};
pub(crate) use inode::kernel_inode;
pub(crate) use names::{clamp_ttl, NameChange, NameGrant, ResolvedNames};

use crate::engine::Engine;

/// An address as the kernel's keys hold it: (`AF_INET`, the four bytes first) for IPv4 and
/// IPv4-mapped IPv6, (`AF_INET6`, the sixteen bytes) for the rest.
pub(crate) fn kernel_addr(addr: std::net::IpAddr) -> (u16, [u8; 16]) {
    use secops_common::kernel::{AF_INET, AF_INET6};
    match addr.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (AF_INET, bytes)
        }
        std::net::IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    }
}

/// The file rules as the kernel holds them, and what reading the kernel's file events needs:
/// the entries' paths and rule ids, and who each counter slot belongs to.
#[derive(Debug, Default)]
pub(crate) struct FileRules {
    pub(crate) compiled: CompiledFiles,
    /// Every slot ever given (not only this policy's), for auditing counts made under an
    /// earlier policy or while no daemon ran.
    pub(crate) count_slots: CountSlots,
}

/// Compiles the file rules for `agents`, and gives every counted verdict its counter slot
/// from the table in `slots_file`. A table that grew is saved before this returns, so no
/// count the kernel makes is ever under a slot nobody can name. `previous` are the protected
/// objects of the rules compiled last: one that moved keeps its protection where it is now.
pub(crate) fn compile_file_rules(
    engine: &Engine,
    agents: &[AgentTarget],
    mount_points: &[PathBuf],
    builtin: &[BuiltinProtection],
    previous: &Followed,
    slots_file: &Path,
    agent_name: impl Fn(u32) -> Option<String>,
) -> Result<FileRules, CountSlotsError> {
    let mut compiled = files::compile(engine, agents, mount_points, builtin, previous);
    let mut count_slots = CountSlots::load(slots_file)?;
    if count_slots.assign(&mut compiled, agent_name) {
        count_slots.save(slots_file)?;
    }
    Ok(FileRules {
        compiled,
        count_slots,
    })
}
