//! The Landlock layer as the launcher applies it: the daemon's compiled plan
//! (`api::LandlockPlan`) made into a ruleset while the launcher is still root (every rule's
//! path can be opened), and restricted onto the process last, right before exec, so nothing
//! the launcher itself still does (cgroup move, workspace, credentials) is judged by it. The
//! domain is inherited by every child and can only be narrowed.
//!
//! Features are applied best-effort, one by one, by the kernel's ABI (the `landlock` crate's
//! compatibility layer): refer needs ABI 2, truncate 3, TCP ports 4, scopes 6, denial logging
//! after exec 7. What this kernel enforces is said in one line ([`Prepared::describe`]).

use std::fmt::Write as _;

use landlock::{
    AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};

use crate::api::LandlockPlan;

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("the kernel has no Landlock (or it is disabled at boot), but the daemon compiled a ruleset for this agent")]
    Unavailable,
    #[error("building the ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("the kernel did not enforce the ruleset")]
    NotEnforced,
}

/// The kernel's Landlock ABI version, `None` without Landlock.
pub fn kernel_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no attribute (NULL, size 0) and returns an integer.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then(|| i32::try_from(v).unwrap_or(i32::MAX))
}

/// What an ABI enforces of a plan, one clause per feature.
pub fn abi_features(abi: i32) -> String {
    let mut out = String::from("file write/create/delete/read/exec by hierarchy");
    let feature = |min: i32, what: &str| {
        if abi >= min {
            format!(", {what}")
        } else {
            format!(", NOT {what} (needs ABI {min})")
        }
    };
    out += &feature(
        2,
        "refer (renames and links across directories cannot carry files out)",
    );
    out += &feature(3, "truncate");
    out += &feature(4, "TCP connect by port");
    out += &feature(6, "signal and abstract unix socket scoping");
    out += &feature(7, "kernel audit logging of denials after exec");
    if abi < 2 {
        out += "; without refer, every rename or link across directories is refused";
    }
    out
}

/// A ruleset made and filled, waiting to be restricted onto the process.
pub struct Prepared {
    ruleset: RulesetCreated,
    abi: i32,
    plan_paths: usize,
    /// Rule paths that could not be opened (gone since the daemon compiled): their grants
    /// are left out, which only denies more.
    missing: usize,
    tcp: Option<usize>,
    tcp_why: String,
}

impl Prepared {
    /// Opens every rule's path and adds the rules: call while the process can still reach
    /// them all (as root, before credentials change).
    pub fn build(plan: &LandlockPlan) -> Result<Prepared, LandlockError> {
        let abi = kernel_abi().ok_or(LandlockError::Unavailable)?;
        let handled = BitFlags::<AccessFs>::from_bits_truncate(plan.handled_fs);
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(handled)?;
        if plan.tcp_connect.is_some() {
            ruleset = ruleset.handle_access(AccessNet::ConnectTcp)?;
        }
        let scopes = BitFlags::<Scope>::from_bits_truncate(plan.scopes);
        if !scopes.is_empty() {
            ruleset = ruleset.scope(scopes)?;
        }
        let mut created = ruleset
            .create()?
            // The launcher sets no_new_privs itself, and checks it took effect.
            .no_new_privs(false)
            .log_new_exec(true)?;
        let mut missing = 0;
        for rule in &plan.paths {
            let Ok(fd) = PathFd::new(&rule.path) else {
                missing += 1;
                continue;
            };
            let mut access = BitFlags::<AccessFs>::from_bits_truncate(rule.access) & handled;
            if !rule.path.is_dir() {
                access &= AccessFs::from_file(ABI::V7);
            }
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
        let tcp = match &plan.tcp_connect {
            Some(ports) => {
                for &port in ports {
                    created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
                }
                Some(ports.len())
            }
            None => None,
        };
        Ok(Prepared {
            ruleset: created,
            abi,
            plan_paths: plan.paths.len(),
            missing,
            tcp,
            tcp_why: plan.tcp_why.clone(),
        })
    }

    /// What this kernel enforces of the plan.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "landlock ABI {}: {} path rule(s)",
            self.abi, self.plan_paths
        );
        if self.missing > 0 {
            let _ = write!(out, " ({} gone since compiled, left out)", self.missing);
        }
        let _ = write!(out, "; {}", abi_features(self.abi));
        match self.tcp {
            Some(n) if self.abi >= 4 => {
                let _ = write!(out, "; TCP connect to {n} port(s) only");
            }
            None => {
                let _ = write!(out, "; TCP {}", self.tcp_why);
            }
            Some(_) => {}
        }
        out
    }

    /// Restricts the calling thread (and so the command it becomes) to the ruleset. Must
    /// come after no_new_privs; fails unless the kernel enforces it at least partly.
    pub fn restrict(self) -> Result<RestrictionStatus, LandlockError> {
        let status = self.ruleset.restrict_self()?;
        if status.ruleset == RulesetStatus::NotEnforced {
            return Err(LandlockError::NotEnforced);
        }
        Ok(status)
    }
}
