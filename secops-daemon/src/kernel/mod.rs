//! The kernel layer: loads secops' BPF programs (`secops-ebpf`), attaches them, writes the
//! maps they decide from, and reads the events they report.
//!
//! - [`Kernel`]: load every object with its maps pinned in one bpffs directory; attach the
//!   egress programs to the secops root cgroup and the tracepoints; adopt what an earlier
//!   daemon pinned; tear everything down.
//! - [`KernelMaps`]: the map writers (config, agents, egress tries, heartbeat) and readers
//!   (lost-event counters, allowed-egress aggregates), opened from the pins.
//! - [`EventReader`] / [`AsyncEventReader`]: the ring buffer as [`KernelEvent`] values.
//! - [`probe`]: which layers this kernel supports, with reasons.
//! - [`fs`]: finding cgroup2, mounting bpffs/tracefs/securityfs when a fresh machine has
//!   none, cgroup ids and levels.
//!
//! The contract with the programs is `secops-ebpf/include/secops.h`, mirrored by
//! `secops_common::kernel`. Every program ignores tasks outside agent cgroups.

mod cgroup_level;
mod decisions;
mod egress;
mod error;
mod events;
mod families;
pub mod fs;
mod loader;
mod maps;
mod probe;
mod ring_positions;
mod sys;

pub use egress::{
    canonical_addr, compile_egress, merge_ranges, EgressAllow, EgressEntries, PortRule,
};
pub use error::{KernelError, Result};
pub use events::{
    parse_event, split_wait_status, AsyncEventReader, EventMeta, EventReader, KernelEvent,
    LsmDenial, LsmOp, NetHook,
};
pub use families::{verifier_error_line, Family, FamilyFailure, FamilyState};
pub use loader::{
    unpin_all, AncestorLookup, Attached, Kernel, LoadOptions, StartGuard, DEFAULT_RING_BUFFER_BYTES,
};
pub use maps::{AllowedEgress, EgressUpdate, FileCount, KernelMaps, LostCounts, NamesMap};
pub use probe::{ancestor_helper_in_tracing, probe, Capabilities, Capability};
