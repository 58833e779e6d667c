//! The daemon's side of the maps: opened from their pins (so a process that did not load
//! the programs, or a restarted daemon, reaches the same maps), written only here.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, MapInfo, MapType, PerCpuArray};
use aya::Pod;
use secops_common::kernel::{
    Agent, AncestorKey, Config, Egress4Key, Egress6Key, EgressAllowedKey, EgressAllowedValue,
    EgressValue, Grant, GrantKey, InodeKey, InodeRule, AF_INET, MAPS, MAP_AGENTS,
    MAP_CGROUP_ANCESTORS, MAP_CONFIG, MAP_EGRESS4, MAP_EGRESS6, MAP_EGRESS_ALLOWED, MAP_EVENTS,
    MAP_FILE_COUNTS, MAP_GRANTS, MAP_HEARTBEAT, MAP_INODES, MAP_PROTECTED_PIDS, MAP_ROOT_CGROUP,
    MAP_STATS, STATS_LEN, STATS_SUBS,
};
use secops_common::kernel::{COUNT_SLOTS, FS_OPS};

use super::egress::{compile_egress, EgressAllow, EgressEntries};
use super::error::{KernelError, Result};
use super::sys;

/// A contract type, usable as a map key or value. aya's `Pod` is a foreign trait and the
/// contract types live in secops-common (which does not depend on aya), hence the wrapper.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct P<T>(pub T);

/// Marks the secops-common contract types: `#[repr(C)]`, integers and arrays only, every
/// bit pattern valid.
pub(crate) trait Contract: Copy + 'static {}
impl Contract for Config {}
impl Contract for Agent {}
impl Contract for EgressValue {}
impl Contract for Lpm4 {}
impl Contract for Lpm6 {}
impl Contract for InodeKey {}
impl Contract for InodeRule {}
impl Contract for EgressAllowedKey {}
impl Contract for EgressAllowedValue {}
impl Contract for GrantKey {}
impl Contract for Grant {}
impl Contract for AncestorKey {}

// SAFETY: see `Contract`: plain old data, no padding the kernel would not also see.
unsafe impl<T: Contract> Pod for P<T> {}

/// The part of `Egress4Key` after `prefixlen`: aya's `lpm_trie::Key` supplies the prefix
/// length itself, so `Key<Lpm4>` has `Egress4Key`'s layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Lpm4 {
    agent_index: u32,
    addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Lpm6 {
    agent_index: u32,
    addr: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<Key<P<Lpm4>>>() == std::mem::size_of::<Egress4Key>());
const _: () = assert!(std::mem::size_of::<Key<P<Lpm6>>>() == std::mem::size_of::<Egress6Key>());

/// What each pinned map must look like for this build: type, key size, value size.
pub(crate) fn expected_layout(name: &str) -> Option<(MapType, u32, u32)> {
    use std::mem::size_of;
    let s = |n: usize| n as u32;
    Some(match name {
        MAP_CONFIG => (MapType::Array, 4, s(size_of::<Config>())),
        MAP_AGENTS => (MapType::Hash, 8, s(size_of::<Agent>())),
        MAP_EGRESS4 => (
            MapType::LpmTrie,
            s(size_of::<Egress4Key>()),
            s(size_of::<EgressValue>()),
        ),
        MAP_EGRESS6 => (
            MapType::LpmTrie,
            s(size_of::<Egress6Key>()),
            s(size_of::<EgressValue>()),
        ),
        MAP_EGRESS_ALLOWED => (
            MapType::LruHash,
            s(size_of::<EgressAllowedKey>()),
            s(size_of::<EgressAllowedValue>()),
        ),
        MAP_EVENTS => (MapType::RingBuf, 0, 0),
        MAP_STATS => (MapType::PerCpuArray, 4, 8),
        MAP_HEARTBEAT => (MapType::Array, 4, 8),
        MAP_INODES => (
            MapType::Hash,
            s(size_of::<InodeKey>()),
            s(size_of::<InodeRule>()),
        ),
        MAP_PROTECTED_PIDS => (MapType::Hash, 4, 4),
        MAP_CGROUP_ANCESTORS => (MapType::LruHash, s(size_of::<AncestorKey>()), 8),
        MAP_ROOT_CGROUP => (MapType::CgroupArray, 4, 4),
        MAP_FILE_COUNTS => (MapType::Array, 4, 8),
        MAP_GRANTS => (
            MapType::Hash,
            s(size_of::<GrantKey>()),
            s(size_of::<Grant>()),
        ),
        _ => return None,
    })
}

/// Checks every map already pinned in `pin_dir` against this build's layouts, so a daemon
/// never adopts maps whose records it would misread. Returns the pinned ring buffer's size,
/// if there is one (an adopted ring buffer keeps its size).
pub(crate) fn check_pinned_maps(pin_dir: &Path) -> Result<Option<u32>> {
    let mut ring_size = None;
    for name in MAPS {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path)
            .map_err(|e| KernelError::map(name, "reading pinned map info", e))?;
        let Some((ty, key, value)) = expected_layout(name) else {
            continue;
        };
        let actual_ty = info
            .map_type()
            .map_err(|e| KernelError::map(name, "reading map type", e))?;
        let entries_differ = name == MAP_STATS && info.max_entries() as usize != STATS_LEN;
        if actual_ty != ty || info.key_size() != key || info.value_size() != value || entries_differ
        {
            return Err(KernelError::PinnedMapMismatch {
                path,
                detail: format!(
                    "pinned: {actual_ty:?} key {} value {} entries {}; expected: {ty:?} key {key} value {value}",
                    info.key_size(),
                    info.value_size(),
                    info.max_entries()
                ),
            });
        }
        if name == MAP_EVENTS {
            ring_size = Some(info.max_entries());
        }
    }
    Ok(ring_size)
}

fn open_map(pin_dir: &Path, name: &'static str) -> Result<Map> {
    let data = MapData::from_pin(pin_dir.join(name))
        .map_err(|e| KernelError::map(name, "opening pinned map", e))?;
    Map::from_map_data(data).map_err(|e| KernelError::map(name, "opening pinned map", e))
}

/// Events lost because the ring buffer was full, summed over CPUs, per slot of
/// `secops_stats` (an event kind and its sub-kind: [`LostCounts::slots`]). The counters only
/// grow while the map lives: audit the difference between reads. `map_id` names the map they
/// were read from, so counts kept from an earlier map (before a teardown) are not taken for
/// this one's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostCounts {
    pub map_id: u32,
    pub by_slot: Vec<u64>,
}

impl Default for LostCounts {
    fn default() -> Self {
        LostCounts {
            map_id: 0,
            by_slot: vec![0; STATS_LEN],
        }
    }
}

impl LostCounts {
    pub fn total(&self) -> u64 {
        self.by_slot.iter().sum()
    }

    /// Lost events of one kind (`secops_common::kernel::EVENT_*`), every sub-kind.
    pub fn of_kind(&self, kind: u32) -> u64 {
        let start = kind as usize * STATS_SUBS;
        self.by_slot.iter().skip(start).take(STATS_SUBS).sum()
    }

    /// (kind, sub-kind, count) of every slot that counted something.
    pub fn slots(&self) -> impl Iterator<Item = (u32, u32, u64)> + '_ {
        self.by_slot
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| ((i / STATS_SUBS) as u32, (i % STATS_SUBS) as u32, n))
    }

    /// What was lost since `earlier`: everything, when `earlier` was read from another map.
    pub fn since(&self, earlier: &LostCounts) -> LostCounts {
        let same_map = earlier.map_id == self.map_id;
        let by_slot = self
            .by_slot
            .iter()
            .enumerate()
            .map(|(i, &now)| match earlier.by_slot.get(i) {
                Some(&before) if same_map => now.saturating_sub(before),
                _ => now,
            })
            .collect();
        LostCounts {
            map_id: self.map_id,
            by_slot,
        }
    }
}

/// Allowed connections to one destination since the last drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedEgress {
    pub agent_index: u32,
    pub addr: IpAddr,
    pub port: u16,
    /// IPPROTO_* of the socket.
    pub protocol: u16,
    pub count: u64,
    /// CLOCK_BOOTTIME ns of the first and the last connection.
    pub first_ns: u64,
    pub last_ns: u64,
}

/// What `replace_egress` changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EgressUpdate {
    pub written: usize,
    pub removed: usize,
}

pub struct KernelMaps {
    pin_dir: PathBuf,
    config: Array<MapData, P<Config>>,
    agents: HashMap<MapData, u64, P<Agent>>,
    egress4: LpmTrie<MapData, P<Lpm4>, P<EgressValue>>,
    egress6: LpmTrie<MapData, P<Lpm6>, P<EgressValue>>,
    // Drained with lookup-and-delete, which aya's HashMap does not offer.
    allowed: MapData,
    stats: PerCpuArray<MapData, u64>,
    heartbeat: Array<MapData, u64>,
    inodes: HashMap<MapData, P<InodeKey>, P<InodeRule>>,
    protected_pids: HashMap<MapData, u32, u32>,
    file_counts: FileCounters,
    grants: HashMap<MapData, P<GrantKey>, P<Grant>>,
}

/// Allowed file operations under one counter slot (an agent and a low-risk rule), counted
/// in the kernel since the last drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCount {
    pub slot: u16,
    /// `OP_*`.
    pub op: usize,
    pub count: u64,
}

/// `secops_file_counts`, mapped into the daemon: the kernel increments the counters, the
/// daemon swaps them to zero, both atomically, so no count is lost or taken twice and
/// draining costs no syscall.
struct FileCounters {
    base: std::ptr::NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is shared memory that is only ever accessed with atomic operations.
unsafe impl Send for FileCounters {}
unsafe impl Sync for FileCounters {}

impl FileCounters {
    const LEN: usize = COUNT_SLOTS * FS_OPS;

    fn map(pin_dir: &Path) -> Result<FileCounters> {
        let map = MapData::from_pin(pin_dir.join(MAP_FILE_COUNTS))
            .map_err(|e| KernelError::map(MAP_FILE_COUNTS, "opening pinned map", e))?;
        let bytes = Self::LEN * std::mem::size_of::<u64>();
        // SAFETY: a shared read-write mapping of an mmapable BPF array of exactly LEN u64s
        // (its layout was checked against this build); the fd may close after mmap.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd()),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(KernelError::MapSyscall {
                map: MAP_FILE_COUNTS,
                action: "mapping into memory",
                source: std::io::Error::last_os_error(),
            });
        }
        let base = std::ptr::NonNull::new(addr.cast::<u64>()).ok_or(KernelError::MapSyscall {
            map: MAP_FILE_COUNTS,
            action: "mapping into memory",
            source: std::io::Error::other("mmap returned NULL"),
        })?;
        Ok(FileCounters {
            base,
            len: Self::LEN,
        })
    }

    fn drain(&self) -> Vec<FileCount> {
        let mut out = Vec::new();
        for index in 0..self.len {
            // SAFETY: index < len, inside the mapping; u64s in the mapping are 8-aligned.
            let counter =
                unsafe { std::sync::atomic::AtomicU64::from_ptr(self.base.as_ptr().add(index)) };
            if counter.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                continue;
            }
            let count = counter.swap(0, std::sync::atomic::Ordering::SeqCst);
            if count > 0 {
                out.push(FileCount {
                    slot: (index / FS_OPS) as u16,
                    op: index % FS_OPS,
                    count,
                });
            }
        }
        out
    }
}

impl Drop for FileCounters {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(
                self.base.as_ptr().cast(),
                self.len * std::mem::size_of::<u64>(),
            )
        };
    }
}

/// What replacing the inode entries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeUpdate {
    pub written: usize,
    pub removed: usize,
}

impl std::fmt::Debug for KernelMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMaps")
            .field("pin_dir", &self.pin_dir)
            .finish()
    }
}

impl KernelMaps {
    /// Opens every map pinned in `pin_dir` (by `Kernel::load`, in this process or an
    /// earlier one).
    pub fn open(pin_dir: &Path) -> Result<KernelMaps> {
        check_pinned_maps(pin_dir)?;
        let conv = |name: &'static str| move |e| KernelError::map(name, "opening pinned map", e);
        Ok(KernelMaps {
            pin_dir: pin_dir.to_path_buf(),
            config: Array::try_from(open_map(pin_dir, MAP_CONFIG)?).map_err(conv(MAP_CONFIG))?,
            agents: HashMap::try_from(open_map(pin_dir, MAP_AGENTS)?).map_err(conv(MAP_AGENTS))?,
            egress4: LpmTrie::try_from(open_map(pin_dir, MAP_EGRESS4)?)
                .map_err(conv(MAP_EGRESS4))?,
            egress6: LpmTrie::try_from(open_map(pin_dir, MAP_EGRESS6)?)
                .map_err(conv(MAP_EGRESS6))?,
            allowed: MapData::from_pin(pin_dir.join(MAP_EGRESS_ALLOWED))
                .map_err(conv(MAP_EGRESS_ALLOWED))?,
            stats: PerCpuArray::try_from(open_map(pin_dir, MAP_STATS)?).map_err(conv(MAP_STATS))?,
            heartbeat: Array::try_from(open_map(pin_dir, MAP_HEARTBEAT)?)
                .map_err(conv(MAP_HEARTBEAT))?,
            inodes: HashMap::try_from(open_map(pin_dir, MAP_INODES)?).map_err(conv(MAP_INODES))?,
            protected_pids: HashMap::try_from(open_map(pin_dir, MAP_PROTECTED_PIDS)?)
                .map_err(conv(MAP_PROTECTED_PIDS))?,
            file_counts: FileCounters::map(pin_dir)?,
            grants: HashMap::try_from(open_map(pin_dir, MAP_GRANTS)?).map_err(conv(MAP_GRANTS))?,
        })
    }

    /// Makes the inode entries exactly `entries`: writes every entry first (changed ones
    /// in place), then removes the ones no longer wanted, so no lookup in between finds
    /// less protection than either the old or the new set gives.
    pub fn replace_inodes(
        &mut self,
        entries: &std::collections::BTreeMap<InodeKey, InodeRule>,
    ) -> Result<InodeUpdate> {
        let mut update = InodeUpdate::default();
        let old: Vec<InodeKey> = self
            .inodes
            .keys()
            .map(|k| {
                k.map(|k| k.0)
                    .map_err(|e| KernelError::map(MAP_INODES, "iterating", e))
            })
            .collect::<Result<_>>()?;
        for (key, rule) in entries {
            self.inodes
                .insert(P(*key), P(*rule), 0)
                .map_err(|e| KernelError::map(MAP_INODES, "writing", e))?;
            update.written += 1;
        }
        for key in old.iter().filter(|k| !entries.contains_key(k)) {
            match self.inodes.remove(&P(*key)) {
                Ok(()) => update.removed += 1,
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(KernelError::map(MAP_INODES, "removing", e)),
            }
        }
        Ok(update)
    }

    /// Installs (or replaces) a grant; the kernel checks its expiry itself.
    pub fn grant(&mut self, key: &GrantKey, grant: &Grant) -> Result<()> {
        self.grants
            .insert(P(*key), P(*grant), 0)
            .map_err(|e| KernelError::map(MAP_GRANTS, "writing", e))
    }

    /// The grants the kernel holds (spent one-shot grants are gone).
    pub fn grants(&self) -> Result<Vec<(GrantKey, Grant)>> {
        self.grants
            .iter()
            .map(|item| {
                item.map(|(k, v)| (k.0, v.0))
                    .map_err(|e| KernelError::map(MAP_GRANTS, "iterating", e))
            })
            .collect()
    }

    /// Removes grants that ran out before `now_boot_ns`. Only housekeeping: the kernel
    /// already ignores them. Returns how many were removed.
    pub fn sweep_grants(&mut self, now_boot_ns: u64) -> Result<usize> {
        let expired: Vec<GrantKey> = self
            .grants()?
            .into_iter()
            .filter(|(_, g)| g.expires_ns <= now_boot_ns)
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for key in expired {
            match self.grants.remove(&P(key)) {
                Ok(()) => removed += 1,
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(KernelError::map(MAP_GRANTS, "removing", e)),
            }
        }
        Ok(removed)
    }

    /// Makes `tgid` (this daemon) the one process agents may not signal or ptrace; entries
    /// of earlier daemons are removed (their pids may be anyone's now).
    pub fn protect_only(&mut self, tgid: u32) -> Result<()> {
        let old: Vec<u32> = self
            .protected_pids
            .keys()
            .filter_map(|k| k.ok())
            .filter(|&k| k != tgid)
            .collect();
        self.protected_pids
            .insert(tgid, 1, 0)
            .map_err(|e| KernelError::map(MAP_PROTECTED_PIDS, "writing", e))?;
        for pid in old {
            match self.protected_pids.remove(&pid) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(KernelError::map(MAP_PROTECTED_PIDS, "removing", e)),
            }
        }
        Ok(())
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn set_config(&mut self, config: &Config) -> Result<()> {
        self.config
            .set(0, P(*config), 0)
            .map_err(|e| KernelError::map(MAP_CONFIG, "writing", e))
    }

    pub fn config(&self) -> Result<Config> {
        self.config
            .get(&0, 0)
            .map(|p| p.0)
            .map_err(|e| KernelError::map(MAP_CONFIG, "reading", e))
    }

    /// Makes the cgroup `cgroup_id` (and every cgroup below it) the agent `agent`.
    pub fn upsert_agent(&mut self, cgroup_id: u64, agent: &Agent) -> Result<()> {
        self.agents
            .insert(cgroup_id, P(*agent), 0)
            .map_err(|e| KernelError::map(MAP_AGENTS, "writing", e))
    }

    /// Ok(false) if the cgroup was not an agent. The agent's egress entries stay: remove
    /// them with `replace_egress(index, &[])` if the index will not be reused.
    pub fn remove_agent(&mut self, cgroup_id: u64) -> Result<bool> {
        match self.agents.remove(&cgroup_id) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(KernelError::map(MAP_AGENTS, "removing", e)),
        }
    }

    pub fn agents(&self) -> Result<Vec<(u64, Agent)>> {
        self.agents
            .iter()
            .map(|r| {
                r.map(|(k, v)| (k, v.0))
                    .map_err(|e| KernelError::map(MAP_AGENTS, "iterating", e))
            })
            .collect()
    }

    /// Replaces the egress allowlist of agent `agent_index` with `allow`: writes every new
    /// entry first, then deletes the agent's entries that are no longer wanted. In between,
    /// a lookup sees old and new entries side by side, never an empty list.
    pub fn replace_egress(
        &mut self,
        agent_index: u32,
        allow: &[EgressAllow],
    ) -> Result<EgressUpdate> {
        let entries = compile_egress(agent_index, allow)?;
        let old = self.egress_entries(agent_index)?;
        let mut update = EgressUpdate::default();

        let mut keep4 = HashSet::new();
        for (k, v) in &entries.v4 {
            let key = Key::new(
                k.prefixlen,
                P(Lpm4 {
                    agent_index,
                    addr: k.addr,
                }),
            );
            self.egress4
                .insert(&key, P(*v), 0)
                .map_err(|e| KernelError::map(MAP_EGRESS4, "writing", e))?;
            keep4.insert((k.prefixlen, k.addr));
            update.written += 1;
        }
        let mut keep6 = HashSet::new();
        for (k, v) in &entries.v6 {
            let key = Key::new(
                k.prefixlen,
                P(Lpm6 {
                    agent_index,
                    addr: k.addr,
                }),
            );
            self.egress6
                .insert(&key, P(*v), 0)
                .map_err(|e| KernelError::map(MAP_EGRESS6, "writing", e))?;
            keep6.insert((k.prefixlen, k.addr));
            update.written += 1;
        }
        for (k, _) in old
            .v4
            .iter()
            .filter(|(k, _)| !keep4.contains(&(k.prefixlen, k.addr)))
        {
            let key = Key::new(
                k.prefixlen,
                P(Lpm4 {
                    agent_index,
                    addr: k.addr,
                }),
            );
            match self.egress4.remove(&key) {
                Ok(()) => update.removed += 1,
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(KernelError::map(MAP_EGRESS4, "removing", e)),
            }
        }
        for (k, _) in old
            .v6
            .iter()
            .filter(|(k, _)| !keep6.contains(&(k.prefixlen, k.addr)))
        {
            let key = Key::new(
                k.prefixlen,
                P(Lpm6 {
                    agent_index,
                    addr: k.addr,
                }),
            );
            match self.egress6.remove(&key) {
                Ok(()) => update.removed += 1,
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(KernelError::map(MAP_EGRESS6, "removing", e)),
            }
        }
        Ok(update)
    }

    /// The trie entries the kernel holds for agent `agent_index`.
    pub fn egress_entries(&self, agent_index: u32) -> Result<EgressEntries> {
        let mut entries = EgressEntries::default();
        for item in self.egress4.iter() {
            let (key, value) = item.map_err(|e| KernelError::map(MAP_EGRESS4, "iterating", e))?;
            let data = key.data().0;
            if data.agent_index == agent_index {
                entries.v4.push((
                    Egress4Key {
                        prefixlen: key.prefix_len(),
                        agent_index,
                        addr: data.addr,
                    },
                    value.0,
                ));
            }
        }
        for item in self.egress6.iter() {
            let (key, value) = item.map_err(|e| KernelError::map(MAP_EGRESS6, "iterating", e))?;
            let data = key.data().0;
            if data.agent_index == agent_index {
                entries.v6.push((
                    Egress6Key {
                        prefixlen: key.prefix_len(),
                        agent_index,
                        addr: data.addr,
                    },
                    value.0,
                ));
            }
        }
        Ok(entries)
    }

    /// The daemon's liveness stamp (e.g. CLOCK_BOOTTIME ns); nothing in the kernel reads it
    /// yet.
    pub fn set_heartbeat(&mut self, value: u64) -> Result<()> {
        self.heartbeat
            .set(0, value, 0)
            .map_err(|e| KernelError::map(MAP_HEARTBEAT, "writing", e))
    }

    /// The secops root cgroup (the parent of every agent cgroup), for the programs that
    /// find agents without `bpf_get_current_ancestor_cgroup_id` (ancestry.h): tasks outside
    /// it are told apart in one helper call. Set it with the config.
    pub fn set_root_cgroup(&mut self, root: &Path) -> Result<()> {
        let name = MAP_ROOT_CGROUP;
        let dir = std::fs::File::open(root).map_err(|e| KernelError::io("opening", root, e))?;
        let mut map: aya::maps::CgroupArray<MapData> =
            aya::maps::CgroupArray::try_from(open_map(&self.pin_dir, name)?)
                .map_err(|e| KernelError::map(name, "opening pinned map", e))?;
        map.set(0, std::os::fd::AsRawFd::as_raw_fd(&dir), 0)
            .map_err(|e| KernelError::map(name, "writing", e))
    }

    /// What the programs' cgroup walk has cached (`secops_cgroup_ancestors`; empty where the
    /// kernel has the helper): (a task's cgroup id, its ancestor's id at the configured agent
    /// level, 0 if it is not that deep).
    pub fn cgroup_ancestors(&self) -> Result<Vec<(u64, u64)>> {
        let name = MAP_CGROUP_ANCESTORS;
        let map: HashMap<MapData, P<AncestorKey>, u64> =
            HashMap::try_from(open_map(&self.pin_dir, name)?)
                .map_err(|e| KernelError::map(name, "opening pinned map", e))?;
        let level = self.config()?.agent_level;
        map.iter()
            .filter_map(|entry| match entry {
                Ok((key, ancestor)) if key.0.level == level => {
                    Some(Ok((key.0.cgroup_id, ancestor)))
                }
                Ok(_) => None,
                Err(e) => Some(Err(KernelError::map(name, "reading", e))),
            })
            .collect()
    }

    pub fn lost_counts(&self) -> Result<LostCounts> {
        let info = MapInfo::from_pin(self.pin_dir.join(MAP_STATS))
            .map_err(|e| KernelError::map(MAP_STATS, "reading pinned map info", e))?;
        let mut counts = LostCounts {
            map_id: info.id(),
            ..LostCounts::default()
        };
        for (index, slot) in counts.by_slot.iter_mut().enumerate() {
            let per_cpu = self
                .stats
                .get(&(index as u32), 0)
                .map_err(|e| KernelError::map(MAP_STATS, "reading", e))?;
            *slot = per_cpu.iter().sum();
        }
        Ok(counts)
    }

    /// Takes every aggregated allowed-connection counter out of the kernel: each entry is
    /// read and deleted in one step, so a connection counted after the read starts a fresh
    /// entry instead of being lost.
    pub fn drain_allowed_egress(&mut self) -> Result<Vec<AllowedEgress>> {
        let drained: Vec<(EgressAllowedKey, EgressAllowedValue)> =
            drain(&self.allowed, MAP_EGRESS_ALLOWED)?;
        Ok(drained
            .into_iter()
            .map(|(key, value)| AllowedEgress {
                agent_index: key.agent_index,
                addr: if key.family == AF_INET {
                    IpAddr::V4(Ipv4Addr::new(
                        key.addr[0],
                        key.addr[1],
                        key.addr[2],
                        key.addr[3],
                    ))
                } else {
                    IpAddr::V6(Ipv6Addr::from(key.addr))
                },
                port: key.port,
                protocol: key.protocol,
                count: value.count,
                first_ns: value.first_ns,
                last_ns: value.last_ns,
            })
            .collect())
    }

    /// Takes the counts of allowed file operations out of the kernel (see
    /// `SECOPS_RULE_ALLOW_COUNTED`).
    pub fn drain_file_counts(&mut self) -> Vec<FileCount> {
        self.file_counts.drain()
    }
}

/// Every entry of a hash map of contract types, each deleted as it is read (lookup-and-
/// delete), so a count that grows meanwhile is either in this drain or the next, never lost.
fn drain<K: Contract, V: Contract>(map: &MapData, name: &'static str) -> Result<Vec<(K, V)>> {
    let key_size = std::mem::size_of::<K>();
    let value_size = std::mem::size_of::<V>();
    let fd = map.fd().as_fd();
    let syscall = |action: &'static str| {
        move |source| KernelError::MapSyscall {
            map: name,
            action,
            source,
        }
    };

    // Keys first, then lookup-and-delete: deleting while walking would restart the walk.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut next = vec![0u8; key_size];
    let mut more = sys::map_next_key(fd, None, &mut next).map_err(syscall("iterating"))?;
    while more {
        keys.push(next.clone());
        let current = next.clone();
        more = sys::map_next_key(fd, Some(&current), &mut next).map_err(syscall("iterating"))?;
        if keys.len() > 1 << 20 {
            break; // a walk that keeps restarting must still end
        }
    }

    let mut drained = Vec::with_capacity(keys.len());
    for raw_key in &keys {
        let mut raw_value = vec![0u8; value_size];
        let found = match sys::map_lookup_and_delete(fd, raw_key, &mut raw_value) {
            Ok(found) => found,
            // Kernels before 5.14 have no lookup-and-delete for hash maps.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(524)) => {
                let found =
                    sys::map_lookup(fd, raw_key, &mut raw_value).map_err(syscall("reading"))?;
                if found {
                    sys::map_delete(fd, raw_key).map_err(syscall("deleting"))?;
                }
                found
            }
            Err(e) => return Err(syscall("draining")(e)),
        };
        if !found {
            continue;
        }
        // SAFETY: contract types are plain #[repr(C)] integers and arrays (any bit pattern
        // is valid) and the buffers are exactly their size.
        let key: K = unsafe { std::ptr::read_unaligned(raw_key.as_ptr().cast()) };
        let value: V = unsafe { std::ptr::read_unaligned(raw_value.as_ptr().cast()) };
        drained.push((key, value));
    }
    Ok(drained)
}
