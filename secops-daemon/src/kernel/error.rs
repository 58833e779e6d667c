//! What can go wrong between the daemon and the kernel, each error saying what was being
//! done, to what, and why it failed.

use std::io;
use std::path::PathBuf;

use aya::maps::MapError;
use aya::pin::PinError;
use aya::programs::ProgramError;
use aya::EbpfError;

use super::families::{verifier_error_line, FamilyFailure};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("no cgroup2 filesystem in /proc/self/mountinfo (secops needs the cgroup v2 hierarchy mounted, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`)")]
    NoCgroup2Mount,

    #[error("{} is not below the cgroup2 mount {}", path.display(), mount.display())]
    NotInCgroup2 { path: PathBuf, mount: PathBuf },

    #[error("the cgroup level of {}: {reason}", path.display())]
    CgroupLevel { path: PathBuf, reason: String },

    #[error("mounting {fstype} at {}: {source}", target.display())]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{} is not on a bpf filesystem (pins only work on bpffs)", path.display())]
    NotBpffs { path: PathBuf },

    #[error("loading BPF object {object}: {source}")]
    LoadObject {
        object: &'static str,
        #[source]
        source: Box<EbpfError>,
    },

    #[error("reading the kernel's BTF (needed by LSM programs): {0}")]
    Btf(#[source] Box<aya::BtfError>),

    #[error("{family} of secops could not be used on this kernel: {failure}\n{}", failure.detail)]
    Family {
        family: super::families::Family,
        failure: super::families::FamilyFailure,
    },

    #[error("BPF object {object} has no program {program}")]
    MissingProgram {
        object: &'static str,
        program: &'static str,
    },

    #[error("{action} BPF program {program}: {source}")]
    Program {
        action: &'static str,
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },

    #[error("{action} link of BPF program {program} ({}): {source}", path.display())]
    Link {
        action: &'static str,
        program: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("pinned link {} of {program} is attached to cgroup id {actual}, not to {} (id {expected}); detach_and_unpin it or use another pin directory", path.display(), cgroup.display())]
    LinkedElsewhere {
        program: &'static str,
        path: PathBuf,
        cgroup: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error("map {map}: {action}: {source}")]
    Map {
        map: &'static str,
        action: &'static str,
        #[source]
        source: Box<MapError>,
    },

    #[error("map {map}: {action}: {source}")]
    MapSyscall {
        map: &'static str,
        action: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("pinning {what} at {}: {source}", path.display())]
    Pin {
        what: String,
        path: PathBuf,
        #[source]
        source: Box<PinError>,
    },

    #[error("pinned map {} does not match this build's layout ({detail}); it was created by an incompatible secops: unpin it (losing its state) or use another pin directory", path.display())]
    PinnedMapMismatch { path: PathBuf, detail: String },

    #[error("egress for {network}: {count} distinct port ranges after merging, the kernel holds at most {max} per prefix")]
    TooManyPortRanges {
        network: String,
        count: usize,
        max: usize,
    },

    #[error("ring buffer size {bytes} is not a power of two multiple of the page size ({page})")]
    RingBufferSize { bytes: u32, page: u32 },

    #[error("malformed ring buffer record ({len} bytes): {detail}")]
    MalformedEvent { len: usize, detail: String },

    #[error("egress port range {lo}-{hi} is empty (lo > hi)")]
    InvalidPortRange { lo: u16, hi: u16 },

    #[error("egress port range {lo}-{hi} names no protocol (TCP and/or UDP)")]
    NoProtocol { lo: u16, hi: u16 },
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

impl KernelError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        KernelError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn map(map: &'static str, action: &'static str, source: MapError) -> Self {
        KernelError::Map {
            map,
            action,
            source: Box::new(source),
        }
    }

    pub(crate) fn program(
        action: &'static str,
        program: &'static str,
        source: ProgramError,
    ) -> Self {
        KernelError::Program {
            action,
            program,
            source: Box::new(source),
        }
    }
}

/// How a family failure is told from the error: the verifier's line for a refused program.
impl FamilyFailure {
    pub(crate) fn new(step: &'static str, error: &KernelError) -> FamilyFailure {
        let (program, reason) = match error {
            KernelError::Program {
                program, source, ..
            } => (Some(*program), program_reason(source)),
            KernelError::Link { program, .. } => (Some(*program), error.to_string()),
            other => (None, first_line(&other.to_string())),
        };
        FamilyFailure {
            step,
            program,
            reason,
            detail: error.to_string(),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// The reason a program did not load: the verifier's error line, with the errno, or the
/// error itself when the verifier said nothing.
fn program_reason(error: &ProgramError) -> String {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => match verifier_error_line(&verifier_log.to_string()) {
            Some(line) => format!("the verifier refused it: {line} ({io_error})"),
            None => format!("BPF_PROG_LOAD failed: {io_error}"),
        },
        other => first_line(&other.to_string()),
    }
}
