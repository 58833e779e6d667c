//! Becoming the agent's account: supplementary groups, gid and uid changed for good, and
//! every capability gone (bounding, ambient, permitted, effective, inheritable), so neither
//! the command nor anything it executes can get one back. Root stays root only when the
//! policy says `user: root`, and even then without capabilities.

use std::io;
use std::path::{Path, PathBuf};

/// Who the command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// As the policy names it, for messages and `USER`.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub home: Option<PathBuf>,
}

impl From<&crate::api::RunAs> for Account {
    /// The account a register answer names.
    fn from(run_as: &crate::api::RunAs) -> Account {
        Account {
            name: run_as.user.clone(),
            uid: run_as.uid,
            gid: run_as.gid,
            groups: run_as.groups.clone(),
            home: run_as.home.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("dropping capability {cap} from the bounding set: {source}")]
    BoundingSet { cap: u32, source: io::Error },
    #[error("clearing the ambient capabilities: {0}")]
    Ambient(io::Error),
    #[error("setgroups({groups:?}): {source}")]
    Groups { groups: Vec<u32>, source: io::Error },
    #[error("setresgid({gid}): {source}")]
    Gid { gid: u32, source: io::Error },
    #[error("setresuid({uid}): {source}")]
    Uid { uid: u32, source: io::Error },
    #[error("capset (clearing root's capabilities): {0}")]
    Capset(io::Error),
    #[error("the credentials did not take: {0}")]
    NotTaken(String),
}

/// Changes the calling process (which must be single-threaded, as the launcher is) into
/// `account`, with no capabilities left. Checks the kernel agrees afterwards.
pub fn become_account(account: &Account) -> Result<(), AccountError> {
    // SAFETY: prctl with integer arguments.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        let e = io::Error::last_os_error();
        // Kernels before 4.3 have no ambient set: nothing to clear.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(AccountError::Ambient(e));
        }
    }
    drop_bounding_set()?;
    let groups: Vec<libc::gid_t> = account.groups.clone();
    // SAFETY: setgroups reads `groups.len()` gids from the pointer.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(AccountError::Groups {
            groups: account.groups.clone(),
            source: io::Error::last_os_error(),
        });
    }
    let (uid, gid) = (account.uid, account.gid);
    // SAFETY: plain syscalls with integer arguments (glibc applies them to every thread).
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(AccountError::Gid {
            gid,
            source: io::Error::last_os_error(),
        });
    }
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(AccountError::Uid {
            uid,
            source: io::Error::last_os_error(),
        });
    }
    // Leaving uid 0 clears permitted and effective; staying root keeps them unless cleared.
    clear_capabilities()?;
    verify(account)
}

/// Drops every capability this kernel knows from the bounding set, so no exec (a setuid or
/// file-capability binary, which no_new_privs also defuses) can add one.
fn drop_bounding_set() -> Result<(), AccountError> {
    for cap in 0..=63u32 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                // Past the last capability this kernel has.
                return Ok(());
            }
            return Err(AccountError::BoundingSet { cap, source: e });
        }
    }
    Ok(())
}

fn clear_capabilities() -> Result<(), AccountError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data::default(); 2];
    // SAFETY: capset reads one header and two data structs (version 3), all valid here.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc != 0 {
        return Err(AccountError::Capset(io::Error::last_os_error()));
    }
    Ok(())
}

fn verify(account: &Account) -> Result<(), AccountError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| AccountError::NotTaken(format!("reading /proc/self/status: {e}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let want = account.uid.to_string();
    let uids = field("Uid:");
    if uids.len() != 4 || uids.iter().any(|u| *u != want) {
        return Err(AccountError::NotTaken(format!(
            "uids are {uids:?}, not {want}"
        )));
    }
    let want = account.gid.to_string();
    let gids = field("Gid:");
    if gids.len() != 4 || gids.iter().any(|g| *g != want) {
        return Err(AccountError::NotTaken(format!(
            "gids are {gids:?}, not {want}"
        )));
    }
    for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        if let Some(value) = field(set).first() {
            if u64::from_str_radix(value, 16) != Ok(0) {
                return Err(AccountError::NotTaken(format!("{set} is {value}")));
            }
        }
    }
    Ok(())
}

/// The environment a login as `account` would have for who it is.
pub fn identity_env(account: &Account) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("USER", account.name.clone()),
        ("LOGNAME", account.name.clone()),
    ];
    if let Some(home) = account.home.as_deref().and_then(Path::to_str) {
        env.push(("HOME", home.to_owned()));
    }
    env
}
