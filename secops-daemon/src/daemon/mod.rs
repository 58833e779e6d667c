//! `secops daemon`: compiles the policy into the kernel's maps, attaches the programs, turns
//! every kernel event into an audit record, and serves the API socket.
//!
//! The parts, each in its own file:
//! - [`options`]: what the daemon can be told; [`state`]: what its threads share, and the
//!   order its locks are taken in;
//! - [`start`]: opening the stores, loading and attaching the kernel layers ([`layers`] says
//!   which are active), spawning the services, stopping them;
//! - [`enforcement`]: putting a policy in force (reload, autonomy change): the enforcement
//!   compiler's output (`crate::enforce`) written to the kernel, then the engine swapped;
//!   [`agents`]: the agents' cgroups and kernel entries; [`hosts`]: allowlist host names;
//! - [`decide`]: **the one decision path** every door hands its requests to;
//! - the doors: [`pipeline`] with [`events`] (kernel events), [`http`] (the API), [`parked`]
//!   (`secops run --ask`), [`approvals`] and [`timeouts`] (ticket decisions), [`dns`] (the
//!   resolver every agent's port-53 traffic is sent to);
//! - [`control`] with [`autonomy`]: the kill switch and live autonomy; [`metrics`];
//!   [`services`]: signals and the policy file watcher.
//!
//! Threads and tasks, each owned and stopped on shutdown: the event pipeline (two OS
//! threads), the audit writer's thread (inside `AuditWriter`), the approval timeout sweeper
//! (an OS thread), the API thread (its own current-thread runtime), one thread per served
//! `--ask` listener (they stop with the shutdown flag), the DNS resolver thread (its own
//! current-thread runtime), and tokio tasks for signals, the policy file watcher and host
//! name refresh.
//!
//! On shutdown the programs and maps stay pinned, so enforcement holds while the daemon is
//! down; the next daemon adopts them.

mod accounts;
mod agents;
mod approvals;
mod autonomy;
mod control;
mod decide;
mod decided;
mod decisions;
mod dns;
mod enforcement;
mod events;
mod follow;
mod hosts;
mod http;
mod landlock;
mod landlock_plans;
mod layers;
mod locks;
mod metrics;
mod options;
mod parked;
mod pipeline;
mod process;
mod retention;
mod services;
mod start;
mod state;
mod systemd;
mod timeouts;

use std::path::Path;

use anyhow::Context;

pub(crate) use decide::{judge, Actor, Door, Request};
pub use http::API_ROUTES;
pub(crate) use options::{ApiLimits, DaemonOptions};
pub(crate) use start::run;

use crate::cgroups::CgroupDir;
use crate::kernel;

/// Tears down what a daemon with these options left pinned: programs, links and maps, and
/// the secops cgroups that hold no process. For uninstalling and for tests.
pub(crate) fn teardown(pin_dir: &Path, cgroup_root: &str) -> anyhow::Result<()> {
    if pin_dir.exists() {
        kernel::unpin_all(pin_dir).with_context(|| format!("unpinning {}", pin_dir.display()))?;
    }
    let mount = kernel::fs::cgroup2_mount()?;
    let root = mount.join(cgroup_root);
    if root.exists() {
        CgroupDir::open_path(&root)?
            .remove()
            .with_context(|| format!("removing {}", root.display()))?;
    }
    Ok(())
}
