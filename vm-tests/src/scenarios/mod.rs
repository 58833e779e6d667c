//! Every scenario the guest runs, in order. A scenario is a function that returns a one-line
//! detail when it passes, or why it failed (the first line is the detail; further lines, such
//! as a daemon's log, are kept in the console log). Adding one is adding a module and an
//! entry in [`SCENARIOS`]; the host side needs no change.

mod bpf_lsm;
mod daemon;
mod degraded_lsm;
mod lsm_attacks;
mod lsm_crash_accounting;
mod lsm_overhead;
mod mounts;
mod moved_tree;
mod parked_delete;

pub struct Scenario {
    /// Letters, digits, `-` and `_` (it is a word on the console).
    pub name: &'static str,
    /// What passing shows, for `--list`.
    pub about: &'static str,
    pub run: fn() -> Result<String, String>,
    /// Run only when named (`--only`), never in the default run: benchmarks, and scenarios
    /// that need a boot of their own (see [`DEGRADED_LSM`]).
    pub named_only: bool,
}

/// The scenario the host runs in a boot of its own, with `bpf` left out of `lsm=`.
pub use secops_vm_tests::protocol::DEGRADED_LSM;

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "mounts",
        about: "proc, sysfs, devtmpfs, tmpfs, cgroup2, bpffs, tracefs and securityfs are mounted",
        run: mounts::run,
        named_only: false,
    },
    Scenario {
        name: "bpf-lsm-loads",
        about: "`secops status` without a daemon probes the kernel: BPF LSM programs load",
        run: bpf_lsm::run,
        named_only: false,
    },
    Scenario {
        name: "daemon-starts",
        about:
            "`secops daemon` loads and attaches its programs, answers `status`, stops on SIGTERM",
        run: daemon::run,
        named_only: false,
    },
    Scenario {
        name: "lsm-attacks",
        about: "every attack of `secops-attack` is blocked by BPF LSM and audited; every benign operation works",
        run: lsm_attacks::run,
        named_only: false,
    },
    Scenario {
        name: "lsm-crash-accounting",
        about: "an agent floods denied opens while its daemon is SIGKILLed twice: every LSM denial is a deny record or counted in a typed lost record, exactly",
        run: lsm_crash_accounting::run,
        named_only: false,
    },
    Scenario {
        name: "parked-delete",
        about: "`secops run --ask`: a parked delete passes on approval through an LSM grant; a path swapped while parked is denied",
        run: parked_delete::run,
        named_only: false,
    },
    Scenario {
        name: DEGRADED_LSM,
        about: "booted with BPF LSM off (`lsm=` without bpf): the daemon starts with the LSM layer INACTIVE and why, egress still enforces, `defaults.require: [lsm]` refuses the start and leaves nothing pinned",
        run: degraded_lsm::run,
        named_only: true,
    },
    Scenario {
        name: "lsm-overhead",
        about: "benchmark: unlink/open/exec loops with the LSM programs attached vs detached",
        run: lsm_overhead::run,
        named_only: true,
    },
];
