//! Loading the BPF objects, attaching their programs, and pinning so that enforcement
//! outlives the daemon.
//!
//! Everything lives in one pin directory on bpffs: the maps (pinned by name by the objects
//! themselves, so all objects share them) and one bpf_link per program
//! (`link_<program>`). A pinned link keeps its program attached while no process holds it;
//! removing the pin (and closing every fd) detaches it. A restarted daemon adopts what it
//! finds: maps by their pins, cgroup links by swapping in its freshly loaded program with
//! BPF_LINK_UPDATE (no moment without enforcement), tracepoint links by keeping them when
//! the program is the same (same tag) or by attaching the new one before dropping the old
//! (perf-event links cannot be updated).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use aya::programs::trace_point::TracePointLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, Lsm, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use secops_common::kernel::{MAPS, MAP_EVENTS};
use secops_ebpf::programs as names;

use super::error::{KernelError, Result};
use super::events::EventReader;
use super::families::{Family, FamilyFailure, FamilyState};
use super::fs;
use super::maps::{check_pinned_maps, KernelMaps};
use super::sys;

/// The default ring buffer size: 16 MiB holds about 28,000 events.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    CgroupSockAddr,
    TracePoint {
        category: &'static str,
        name: &'static str,
    },
    Lsm {
        hook: &'static str,
    },
}

#[derive(Clone, Copy, Debug)]
struct ProgramSpec {
    object: &'static str,
    program: &'static str,
    hook: Hook,
}

const fn tp(
    object: &'static str,
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> ProgramSpec {
    ProgramSpec {
        object,
        program,
        hook: Hook::TracePoint { category, name },
    }
}

const fn sock(program: &'static str) -> ProgramSpec {
    ProgramSpec {
        object: "egress",
        program,
        hook: Hook::CgroupSockAddr,
    }
}

const fn lsm(program: &'static str, hook: &'static str) -> ProgramSpec {
    ProgramSpec {
        object: "lsm",
        program,
        hook: Hook::Lsm { hook },
    }
}

/// Every program secops loads, where it comes from and where it attaches.
const PROGRAMS: &[ProgramSpec] = &[
    sock(names::CONNECT4),
    sock(names::CONNECT6),
    sock(names::SENDMSG4),
    sock(names::SENDMSG6),
    sock(names::RECVMSG4),
    sock(names::RECVMSG6),
    tp("exec", names::EXEC, "sched", "sched_process_exec"),
    tp("exec", names::EXIT, "sched", "sched_process_exit"),
    tp("files", names::UNLINKAT, "syscalls", "sys_enter_unlinkat"),
    tp("files", names::UNLINK, "syscalls", "sys_enter_unlink"),
    tp("files", names::RMDIR, "syscalls", "sys_enter_rmdir"),
    tp("files", names::RENAMEAT2, "syscalls", "sys_enter_renameat2"),
    tp("files", names::RENAMEAT, "syscalls", "sys_enter_renameat"),
    tp("files", names::RENAME, "syscalls", "sys_enter_rename"),
    lsm(names::LSM_UNLINK, "path_unlink"),
    lsm(names::LSM_RMDIR, "path_rmdir"),
    lsm(names::LSM_RENAME, "path_rename"),
    lsm(names::LSM_LINK, "path_link"),
    lsm(names::LSM_TRUNCATE, "path_truncate"),
    lsm(names::LSM_MKNOD, "path_mknod"),
    lsm(names::LSM_FILE_OPEN, "file_open"),
    lsm(names::LSM_EXEC, "bprm_check_security"),
    lsm(names::LSM_MMAP, "mmap_file"),
    lsm(names::LSM_SOCKET_CREATE, "socket_create"),
    lsm(names::LSM_SOCKET_CONNECT, "socket_connect"),
    lsm(names::LSM_UNIX_STREAM_CONNECT, "unix_stream_connect"),
    lsm(names::LSM_UNIX_MAY_SEND, "unix_may_send"),
    lsm(names::LSM_BPF, "bpf"),
    lsm(names::LSM_PTRACE, "ptrace_access_check"),
    lsm(names::LSM_TASK_KILL, "task_kill"),
    lsm(names::LSM_SB_MOUNT, "sb_mount"),
    lsm(names::LSM_SB_UMOUNT, "sb_umount"),
    lsm(names::LSM_MOVE_MOUNT, "move_mount"),
    lsm(names::LSM_SB_PIVOTROOT, "sb_pivotroot"),
    lsm(names::LSM_MODULE_REQUEST, "kernel_module_request"),
    lsm(names::LSM_KERNEL_READ_FILE, "kernel_read_file"),
    lsm(names::LSM_KERNEL_LOAD_DATA, "kernel_load_data"),
    lsm(names::LSM_CHMOD, "path_chmod"),
    lsm(names::LSM_MKDIR, "path_mkdir"),
    lsm(names::LSM_SYMLINK, "path_symlink"),
];

/// How the tracing programs (tracepoints, LSM) find a task's agent cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AncestorLookup {
    /// The helper where this kernel allows it (a probe), else the walk.
    #[default]
    Probe,
    /// `bpf_get_current_ancestor_cgroup_id`.
    Helper,
    /// The task's cgroup read through CO-RE, cached per cgroup (`ancestry.h`): what kernels
    /// without the helper in tracing programs (5.10) run. Tests choose it to check the walk
    /// on a kernel that has the helper.
    Walk,
}

/// The global in each tracing object that selects the helper (1) or the walk (0).
const ANCESTOR_HELPER_GLOBAL: &str = "secops_ancestor_helper";

/// Which program families to load, and the ring buffer's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Bytes; a power of two and a multiple of the page size. Ignored when a ring buffer is
    /// already pinned: that one is adopted with its size (see `Kernel::ring_buffer_bytes`).
    pub ring_buffer_bytes: u32,
    /// cgroup/connect4|6 and sendmsg4|6.
    pub egress: bool,
    /// sched_process_exec and sched_process_exit.
    pub exec: bool,
    /// unlink/rmdir/rename syscall tracepoints.
    pub files: bool,
    /// The BPF LSM programs (only where the probe found that LSM programs load).
    pub lsm: bool,
    pub ancestor_lookup: AncestorLookup,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            egress: true,
            exec: true,
            files: true,
            lsm: false,
            ancestor_lookup: AncestorLookup::Probe,
        }
    }
}

/// How an attach went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link, now pinned.
    New,
    /// A pinned cgroup link was adopted and now runs the newly loaded program.
    Updated,
    /// A pinned tracepoint link runs the same program already and was adopted as it is.
    Kept,
    /// A pinned tracepoint link ran another program: the new one was attached, then the old
    /// link removed.
    Replaced,
    /// Attached for this daemon's lifetime only, unpinned: kernels before 5.15 attach
    /// tracepoint programs through perf events without a bpf_link, which cannot be pinned.
    /// (Observation only: the tracepoints report nothing while no daemon runs anyway.)
    Held,
}

struct Object {
    name: &'static str,
    ebpf: Ebpf,
}

/// A link this daemon holds: its pin, and an fd for link info and updates.
struct HeldLink {
    program: &'static str,
    #[allow(dead_code)] // held so the link cannot vanish between pin removal and drop
    fd: OwnedFd,
}

/// The loaded programs and their maps.
pub struct Kernel {
    pin_dir: PathBuf,
    objects: Vec<Object>,
    links: Vec<HeldLink>,
    maps: KernelMaps,
    ring_buffer_bytes: u32,
    families: Vec<(Family, FamilyState)>,
    /// What was pinned before this load, for [`Kernel::abandon_start`].
    pins_before: PinSnapshot,
    /// Tracepoint links this kernel cannot pin (see [`Attached::Held`]).
    held_tracepoints: Vec<TracePointLink>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("pin_dir", &self.pin_dir)
            .field(
                "objects",
                &self.objects.iter().map(|o| o.name).collect::<Vec<_>>(),
            )
            .field(
                "links",
                &self.links.iter().map(|l| l.program).collect::<Vec<_>>(),
            )
            .field("ring_buffer_bytes", &self.ring_buffer_bytes)
            .finish()
    }
}

impl LoadOptions {
    fn wants(&self, family: Family) -> bool {
        match family {
            Family::Egress => self.egress,
            Family::Exec => self.exec,
            Family::Files => self.files,
            Family::Lsm => self.lsm,
        }
    }
}

/// Loads one family's object (its maps pinned by name in `pin_dir`, shared with the other
/// objects) and every program in it. A program the verifier refuses fails the family.
fn load_family(
    family: Family,
    pin_dir: &Path,
    ring_buffer_bytes: u32,
    ancestor_helper: u32,
) -> Result<Ebpf> {
    let name = family.object();
    let bytes = object_bytes(name).ok_or(KernelError::MissingProgram {
        object: name,
        program: "(object not built)",
    })?;
    let btf = match family {
        Family::Lsm => Some(Btf::from_sys_fs().map_err(|e| KernelError::Btf(Box::new(e)))?),
        _ => None,
    };
    let mut loader = EbpfLoader::new();
    loader
        .default_map_pin_directory(pin_dir)
        .map_max_entries(MAP_EVENTS, ring_buffer_bytes);
    // cgroup sock_addr programs always have the helper and carry no such global.
    if family != Family::Egress {
        loader.override_global(ANCESTOR_HELPER_GLOBAL, &ancestor_helper, true);
    }
    let mut ebpf = loader.load(bytes).map_err(|e| KernelError::LoadObject {
        object: name,
        source: Box::new(e),
    })?;
    for spec in PROGRAMS.iter().filter(|s| s.object == name) {
        let program = ebpf
            .program_mut(spec.program)
            .ok_or(KernelError::MissingProgram {
                object: name,
                program: spec.program,
            })?;
        let loaded = match (spec.hook, &btf) {
            (Hook::CgroupSockAddr, _) => {
                <&mut CgroupSockAddr>::try_from(program).and_then(|p| p.load())
            }
            (Hook::TracePoint { .. }, _) => {
                <&mut TracePoint>::try_from(program).and_then(|p| p.load())
            }
            (Hook::Lsm { hook }, Some(btf)) => {
                <&mut Lsm>::try_from(program).and_then(|p| p.load(hook, btf))
            }
            (Hook::Lsm { .. }, None) => unreachable!("the LSM family always reads BTF"),
        };
        loaded.map_err(|e| KernelError::program("loading", spec.program, e))?;
    }
    Ok(ebpf)
}

/// Which of secops' pins were in a pin directory at one moment (and whether the directory
/// was), so that a failed start can remove exactly what it added.
#[derive(Clone, Debug)]
struct PinSnapshot {
    pin_dir: PathBuf,
    dir_existed: bool,
    pins: Vec<PathBuf>,
}

impl PinSnapshot {
    fn take(pin_dir: &Path) -> PinSnapshot {
        PinSnapshot {
            pin_dir: pin_dir.to_path_buf(),
            dir_existed: pin_dir.exists(),
            pins: secops_pins(pin_dir).filter(|p| p.exists()).collect(),
        }
    }

    /// Unpins every secops pin that is there now and was not then (links before maps, as
    /// in `unpin_all`), and the directory if it was made since and is empty.
    fn remove_new_pins(&self) {
        for pin in secops_pins(&self.pin_dir) {
            if self.pins.contains(&pin) {
                continue;
            }
            match std::fs::remove_file(&pin) {
                Ok(()) => {
                    tracing::info!(pin = %pin.display(), "unpinned what the failed start pinned")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(pin = %pin.display(), "could not unpin after the failed start: {e}")
                }
            }
        }
        if !self.dir_existed {
            let _ = std::fs::remove_dir(&self.pin_dir);
        }
    }
}

/// Removes what a start pinned unless [`StartGuard::disarm`]ed (see [`Kernel::start_guard`]).
#[must_use = "dropping the guard at once unpins what the start pinned"]
pub struct StartGuard {
    pins_before: Option<PinSnapshot>,
}

impl StartGuard {
    /// The start succeeded: what it pinned stays pinned (and outlives the daemon).
    pub fn disarm(mut self) {
        self.pins_before = None;
    }
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(before) = self.pins_before.take() {
            before.remove_new_pins();
        }
    }
}

/// Every path secops pins in `pin_dir`: each program's link (and its staging name), then
/// the maps.
fn secops_pins(pin_dir: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    PROGRAMS
        .iter()
        .flat_map(move |spec| {
            [
                link_pin(pin_dir, spec.program),
                staging_pin(pin_dir, spec.program),
            ]
        })
        .chain(MAPS.iter().map(move |name| pin_dir.join(name)))
}

fn object_bytes(name: &str) -> Option<&'static [u8]> {
    secops_ebpf::PROGRAM_OBJECTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

fn link_pin(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join(format!("link_{program}"))
}

/// Where a replacement link is pinned before it is renamed over the old one. (bpffs
/// refuses names with a dot.)
fn staging_pin(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join(format!("newlink_{program}"))
}

/// BPF_OBJ_GET: an fd for a pinned object.
fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: `attr` is the BPF_OBJ_GET prefix of union bpf_attr; `c` outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut attr as *mut ObjAttr,
            std::mem::size_of::<ObjAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

impl Kernel {
    /// Loads every enabled family with its maps in `pin_dir` (a directory on bpffs, made
    /// if missing; bpffs is mounted at its parent if needed). Maps already pinned there are
    /// adopted, after checking their layout against this build. Programs are loaded into
    /// the kernel (so verifier errors surface here) but not attached. Every requested
    /// family must load: the first that does not is the error, and whatever this call
    /// pinned is unpinned again. [`Kernel::load_available`] keeps the families that load.
    pub fn load(pin_dir: &Path, options: &LoadOptions) -> Result<Kernel> {
        let kernel = Kernel::load_available(pin_dir, options)?;
        let failed = kernel
            .families
            .iter()
            .find_map(|(family, state)| match state {
                FamilyState::Failed(failure) => Some((*family, failure.clone())),
                _ => None,
            });
        match failed {
            None => Ok(kernel),
            Some((family, failure)) => {
                kernel.abandon_start();
                Err(KernelError::Family { family, failure })
            }
        }
    }

    /// Like [`Kernel::load`], but a family this kernel refuses is left out and recorded
    /// ([`Kernel::families`]) instead of failing the load; the others load as usual. Errors
    /// that are no family's (the pin directory, pinned maps of another layout, no family
    /// at all) fail it, and leave nothing pinned that was not pinned before.
    pub fn load_available(pin_dir: &Path, options: &LoadOptions) -> Result<Kernel> {
        // SAFETY: sysconf has no preconditions.
        let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = options.ring_buffer_bytes;
        if !bytes.is_power_of_two() || !bytes.is_multiple_of(page) {
            return Err(KernelError::RingBufferSize { bytes, page });
        }
        let before = PinSnapshot::take(pin_dir);
        fs::ensure_pin_dir(pin_dir)?;
        let loaded = Kernel::load_families(pin_dir, options, bytes);
        if loaded.is_err() {
            before.remove_new_pins();
        }
        let (objects, families, maps, ring_buffer_bytes) = loaded?;
        Ok(Kernel {
            pin_dir: pin_dir.to_path_buf(),
            objects,
            links: Vec::new(),
            maps,
            ring_buffer_bytes,
            families,
            pins_before: before,
            held_tracepoints: Vec::new(),
        })
    }

    #[allow(clippy::type_complexity)]
    fn load_families(
        pin_dir: &Path,
        options: &LoadOptions,
        bytes: u32,
    ) -> Result<(Vec<Object>, Vec<(Family, FamilyState)>, KernelMaps, u32)> {
        let ring_buffer_bytes = check_pinned_maps(pin_dir)?.unwrap_or(bytes);
        let ancestor_helper = u32::from(match options.ancestor_lookup {
            AncestorLookup::Probe => super::probe::ancestor_helper_in_tracing(),
            AncestorLookup::Helper => true,
            AncestorLookup::Walk => false,
        });
        let mut objects = Vec::new();
        let mut families = Vec::new();
        for family in Family::ALL {
            let state = if !options.wants(family) {
                FamilyState::NotRequested
            } else {
                match load_family(family, pin_dir, ring_buffer_bytes, ancestor_helper) {
                    Ok(ebpf) => {
                        objects.push(Object {
                            name: family.object(),
                            ebpf,
                        });
                        FamilyState::Loaded
                    }
                    Err(e) => {
                        let failure = FamilyFailure::new("loading", &e);
                        tracing::error!(%family, "{failure}; the other families are not affected\n{e}");
                        FamilyState::Failed(failure)
                    }
                }
            };
            families.push((family, state));
        }
        let maps = KernelMaps::open(pin_dir)?;
        Ok((objects, families, maps, ring_buffer_bytes))
    }

    /// Every family and where it stands: what `secops status` reports per layer.
    pub fn families(&self) -> &[(Family, FamilyState)] {
        &self.families
    }

    pub fn family_state(&self, family: Family) -> &FamilyState {
        self.families
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, s)| s)
            .unwrap_or(&FamilyState::NotRequested)
    }

    fn set_family_state(&mut self, family: Family, state: FamilyState) {
        if let Some(slot) = self.families.iter_mut().find(|(f, _)| *f == family) {
            slot.1 = state;
        }
    }

    /// Records how attaching `family` went, and hands the result on. A family that never
    /// loaded keeps its loading failure.
    fn record_attach<T>(&mut self, family: Family, result: Result<T>) -> Result<T> {
        match self.family_state(family) {
            FamilyState::Loaded | FamilyState::Attached => {}
            _ => return result,
        }
        let state = match &result {
            Ok(_) => FamilyState::Attached,
            Err(e) => {
                let failure = FamilyFailure::new("attaching", e);
                tracing::error!(%family, "{failure}; the other families are not affected");
                FamilyState::Failed(failure)
            }
        };
        self.set_family_state(family, state);
        result
    }

    /// Removes every pin this daemon's start made (maps, links) and the pin directory if
    /// this start made it, leaving what was pinned before (an earlier daemon's enforcement)
    /// as it was. For a start that failed: it must not leave half a kernel layer behind.
    pub fn abandon_start(self) {
        let before = self.pins_before.clone();
        drop(self);
        before.remove_new_pins();
    }

    /// A guard that does what [`Kernel::abandon_start`] does when it is dropped armed: the
    /// daemon holds one from the load until it is ready, so that any error on the way (a
    /// map write, a required layer missing, the socket taken) leaves nothing pinned.
    pub fn start_guard(&self) -> StartGuard {
        StartGuard {
            pins_before: Some(self.pins_before.clone()),
        }
    }

    /// Keeps a link's fd for the daemon's lifetime (the pin keeps it after that).
    fn hold(&mut self, program: &'static str, fd: OwnedFd) {
        self.links.push(HeldLink { program, fd });
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The ring buffer's real size (an adopted one keeps the size it was made with).
    pub fn ring_buffer_bytes(&self) -> u32 {
        self.ring_buffer_bytes
    }

    pub fn maps(&self) -> &KernelMaps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut KernelMaps {
        &mut self.maps
    }

    /// A reader of the ring buffer (one per daemon: records are consumed as read).
    pub fn event_reader(&self) -> Result<EventReader> {
        EventReader::open(&self.pin_dir)
    }

    fn ebpf_mut(&mut self, object: &'static str) -> Result<&mut Ebpf> {
        self.objects
            .iter_mut()
            .find(|o| o.name == object)
            .map(|o| &mut o.ebpf)
            .ok_or(KernelError::MissingProgram {
                object,
                program: "(object not loaded: enable it in LoadOptions)",
            })
    }

    /// The loaded program of `spec`, whatever its type.
    fn loaded_program(&mut self, spec: &ProgramSpec) -> Result<&mut aya::programs::Program> {
        self.ebpf_mut(spec.object)?
            .program_mut(spec.program)
            .ok_or(KernelError::MissingProgram {
                object: spec.object,
                program: spec.program,
            })
    }

    /// The loaded program of `spec`, as its program type.
    fn program<'a, T>(&'a mut self, spec: &ProgramSpec) -> Result<&'a mut T>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.loaded_program(spec)?
            .try_into()
            .map_err(|e| KernelError::program("finding", spec.program, e))
    }

    /// Attaches the six egress programs (connect, sendmsg and recvmsg, v4 and v6) to the secops root cgroup `root_cgroup`: every
    /// cgroup below it is covered, and the agents map decides whose connections are judged.
    pub fn attach_egress(&mut self, root_cgroup: &Path) -> Result<Vec<(&'static str, Attached)>> {
        let result = self.attach_egress_programs(root_cgroup);
        self.record_attach(Family::Egress, result)
    }

    fn attach_egress_programs(
        &mut self,
        root_cgroup: &Path,
    ) -> Result<Vec<(&'static str, Attached)>> {
        if !self
            .objects
            .iter()
            .any(|o| o.name == Family::Egress.object())
        {
            return Ok(Vec::new());
        }
        let cgroup = File::open(root_cgroup)
            .map_err(|e| KernelError::io("opening cgroup", root_cgroup, e))?;
        let cgroup_id = fs::cgroup_id(root_cgroup)?;
        let mut report = Vec::new();
        for spec in PROGRAMS.iter().filter(|s| s.hook == Hook::CgroupSockAddr) {
            let path = link_pin(&self.pin_dir, spec.program);
            let program: &mut CgroupSockAddr = self.program(spec)?;
            let link_err = |action| link_error(&path, spec.program, action);

            let outcome = if path.exists() {
                let fd = open_pinned(&path).map_err(link_err("opening pinned"))?;
                let info = sys::link_info(fd.as_fd()).map_err(link_err("reading info of"))?;
                if info.link_type != sys::BPF_LINK_TYPE_CGROUP || info.cgroup_id != cgroup_id {
                    return Err(KernelError::LinkedElsewhere {
                        program: spec.program,
                        path,
                        cgroup: root_cgroup.to_path_buf(),
                        expected: cgroup_id,
                        actual: info.cgroup_id,
                    });
                }
                let prog_fd = program
                    .fd()
                    .map_err(|e| KernelError::program("getting fd of", spec.program, e))?;
                sys::link_update(fd.as_fd(), prog_fd.as_fd()).map_err(link_err("updating"))?;
                self.hold(spec.program, fd);
                Attached::Updated
            } else {
                // Link-based cgroup attachments always run alongside others (multi mode);
                // the kernel takes no mode flags for them.
                let id = program
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .map_err(|e| KernelError::program("attaching", spec.program, e))?;
                let link = program
                    .take_link(id)
                    .map_err(|e| KernelError::program("taking link of", spec.program, e))?;
                let fd = pin_link(FdLink::try_from(link), spec.program, &path)?;
                self.hold(spec.program, fd);
                Attached::New
            };
            report.push((spec.program, outcome));
        }
        Ok(report)
    }

    /// Attaches the exec/exit and file tracepoint programs (those loaded), mounting tracefs
    /// first if needed. They report only tasks of agents.
    pub fn attach_tracepoints(&mut self) -> Result<Vec<(&'static str, Attached)>> {
        self.attach_tracepoints_of(&[Family::Exec, Family::Files])
    }

    /// Attaches the tracepoint programs of these families (each if it loaded): the daemon
    /// leaves the file tracepoints loaded but unattached where BPF LSM reports the same
    /// operations with the kernel's verdict.
    pub fn attach_tracepoints_of(
        &mut self,
        families: &[Family],
    ) -> Result<Vec<(&'static str, Attached)>> {
        let mut report = Vec::new();
        let mut first_error = None;
        for &family in families {
            let result =
                fs::mount_tracefs_if_needed().and_then(|_| self.attach_unupdatable(family));
            match self.record_attach(family, result) {
                Ok(links) => report.extend(links),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(report), Err)
    }

    /// Attaches the BPF LSM programs (if loaded). They judge only tasks of agents.
    pub fn attach_lsm(&mut self) -> Result<Vec<(&'static str, Attached)>> {
        let result = self.attach_unupdatable(Family::Lsm);
        self.record_attach(Family::Lsm, result)
    }

    /// Attaches the programs of `family` (if it loaded), for hooks whose links
    /// BPF_LINK_UPDATE cannot switch (perf-event and tracing links): a pinned link running
    /// the same program is kept; one running another program is replaced new-first.
    fn attach_unupdatable(&mut self, family: Family) -> Result<Vec<(&'static str, Attached)>> {
        let mut report = Vec::new();
        let loaded: Vec<&'static str> = self.objects.iter().map(|o| o.name).collect();
        for spec in PROGRAMS
            .iter()
            .filter(|s| loaded.contains(&s.object) && s.object == family.object())
        {
            let path = link_pin(&self.pin_dir, spec.program);
            let pin_dir = self.pin_dir.clone();
            let link_type = match spec.hook {
                Hook::Lsm { .. } => sys::BPF_LINK_TYPE_TRACING,
                _ => sys::BPF_LINK_TYPE_PERF_EVENT,
            };
            let new_tag = self
                .loaded_program(spec)?
                .info()
                .map_err(|e| KernelError::program("reading info of", spec.program, e))?
                .tag();
            let link_err = |action| link_error(&path, spec.program, action);

            if let Hook::TracePoint { category, name } = spec.hook {
                if !aya::features().bpf_perf_link() {
                    let program: &mut TracePoint = self.program(spec)?;
                    let id = program
                        .attach(category, name)
                        .map_err(|e| KernelError::program("attaching", spec.program, e))?;
                    let link = program
                        .take_link(id)
                        .map_err(|e| KernelError::program("taking link of", spec.program, e))?;
                    self.held_tracepoints.push(link);
                    report.push((spec.program, Attached::Held));
                    continue;
                }
            }

            let old = if path.exists() {
                let fd = open_pinned(&path).map_err(link_err("opening pinned"))?;
                let info = sys::link_info(fd.as_fd()).map_err(link_err("reading info of"))?;
                if info.link_type == link_type && program_tag(info.prog_id) == Some(new_tag) {
                    self.hold(spec.program, fd);
                    report.push((spec.program, Attached::Kept));
                    continue;
                }
                Some(fd)
            } else {
                None
            };

            // New link first, old one removed after: at worst an event is reported twice
            // (or a check made twice) during the switch, never missed.
            let link = match spec.hook {
                Hook::TracePoint { category, name } => {
                    let program: &mut TracePoint = self.program(spec)?;
                    let id = program
                        .attach(category, name)
                        .map_err(|e| KernelError::program("attaching", spec.program, e))?;
                    FdLink::try_from(
                        program
                            .take_link(id)
                            .map_err(|e| KernelError::program("taking link of", spec.program, e))?,
                    )
                }
                Hook::Lsm { .. } => {
                    let program: &mut Lsm = self.program(spec)?;
                    let id = program
                        .attach()
                        .map_err(|e| KernelError::program("attaching", spec.program, e))?;
                    Ok(FdLink::from(program.take_link(id).map_err(|e| {
                        KernelError::program("taking link of", spec.program, e)
                    })?))
                }
                Hook::CgroupSockAddr => continue,
            };
            let outcome = if let Some(old_fd) = old {
                let staging = staging_pin(&pin_dir, spec.program);
                let _ = std::fs::remove_file(&staging);
                let new_fd = pin_link(link, spec.program, &staging)?;
                // bpffs renames atomically over the old pin, whose link goes away when
                // `old_fd` closes.
                std::fs::rename(&staging, &path).map_err(link_err("replacing"))?;
                drop(old_fd);
                self.hold(spec.program, new_fd);
                Attached::Replaced
            } else {
                let fd = pin_link(link, spec.program, &path)?;
                self.hold(spec.program, fd);
                Attached::New
            };
            report.push((spec.program, outcome));
        }
        Ok(report)
    }

    /// Detaches every program (by removing its link pin and closing this daemon's fds),
    /// unpins every map, and removes `pin_dir` if nothing else is in it. The kernel side is
    /// then gone: nothing is enforced until the next load and attach. The kernel frees a
    /// link whose last reference was its pin after an RCU grace period, so programs may run
    /// for a moment after this returns.
    pub fn detach_and_unpin(self) -> Result<()> {
        let pin_dir = self.pin_dir.clone();
        drop(self);
        unpin_all(&pin_dir)
    }
}

/// The tag (hash of the instructions, stable across loads of the same program) of a loaded
/// program, by id.
fn program_tag(id: u32) -> Option<u64> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .map(|p| p.tag())
}

/// Pins a freshly made link and returns an fd to it (aya's `PinnedLink` does not lend one).
fn pin_link(
    link: std::result::Result<FdLink, aya::programs::links::LinkError>,
    program: &'static str,
    path: &Path,
) -> Result<OwnedFd> {
    let link = link.map_err(|e| KernelError::Link {
        action: "converting to an fd link",
        program,
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })?;
    let pinned = link.pin(path).map_err(|e| KernelError::Pin {
        what: format!("link of {program}"),
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    let fd = open_pinned(path).map_err(|source| KernelError::Link {
        action: "reopening pinned",
        program,
        path: path.to_path_buf(),
        source,
    })?;
    drop(pinned); // the pin holds the link now
    Ok(fd)
}

/// Removes every pin secops makes in `pin_dir` (links first, which detaches the programs
/// once no process holds them, then maps) and the directory itself if it is then empty.
/// Works without a loaded `Kernel`, e.g. to clean up after a crashed daemon or test. Goes
/// on past a failure, so that as much as possible is removed, and reports the first one.
pub fn unpin_all(pin_dir: &Path) -> Result<()> {
    if !pin_dir.exists() {
        return Ok(());
    }
    let mut first_error = None;
    for path in secops_pins(pin_dir) {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(KernelError::io("unpinning", path, e));
            }
        }
    }
    match std::fs::remove_dir(pin_dir) {
        Ok(()) => {}
        // Someone else's pins are there too: leave them and the directory.
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            tracing::warn!(dir = %pin_dir.display(), "pin directory not empty after unpinning secops' pins; left in place");
        }
        Err(e) => {
            first_error.get_or_insert(KernelError::io("removing", pin_dir, e));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The error for a failed `action` on `program`'s link pinned at `path`.
fn link_error(
    path: &Path,
    program: &'static str,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> KernelError {
    let path = path.to_path_buf();
    move |source| KernelError::Link {
        action,
        program,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_size_must_be_a_power_of_two_of_pages() {
        for bytes in [0, 12_345, 4096 * 3, 1024] {
            let options = LoadOptions {
                ring_buffer_bytes: bytes,
                ..LoadOptions::default()
            };
            // Checked before anything touches the filesystem or the kernel.
            let result = Kernel::load(Path::new("/nonexistent/secops"), &options);
            assert!(
                matches!(result, Err(KernelError::RingBufferSize { bytes: b, .. }) if b == bytes),
                "{bytes}: {result:?}"
            );
        }
    }

    #[test]
    fn every_program_is_in_its_object() {
        for spec in PROGRAMS {
            assert!(object_bytes(spec.object).is_some(), "{}", spec.object);
        }
    }
}
