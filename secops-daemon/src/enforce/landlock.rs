//! An agent's policy compiled into a Landlock ruleset (`api::LandlockPlan`), for kernels where
//! BPF LSM programs cannot load: `secops run` applies it before exec.
//!
//! Landlock is an allowlist: a handled right is denied everywhere except beneath the
//! hierarchies a rule grants it on. The policy is written the other way round (deny these
//! trees), so the grants are the *complement* of the protected trees. The compiler walks the
//! filesystem from `/` and asks the engine, as the inode compiler (`files.rs`) does, what each
//! operation gets for a child of a directory and for anything deeper (probe names no pattern
//! names). A directory whose two answers agree and below which no rule names anything is
//! settled: granted whole, or left out (denied). Otherwise the walk goes one level down:
//! subdirectories are judged the same way, files get the file rights their own path is
//! allowed. The rule semantics stay in the engine; this module only decides where to ask.
//!
//! What cannot be expressed this way (and is reported in `unexpressed`):
//! - a glob below a wildcard at the root (`**/.git/hooks/**`): no finite set of directories
//!   holds its future matches; existing matches are found below literal prefixes only;
//! - directory rights (create, delete, rename, link) in a directory that *contains* a
//!   protected entry: Landlock grants them for the whole hierarchy or not at all, so the
//!   directories above a protected tree lose them for their direct children (fail closed);
//! - files created later in such a directory get no file rights either;
//! - a bind mount or a hardlink made before the agent started that shows a protected file
//!   under an allowed tree (Landlock judges the path walked, not the inode).
//!
//! A rule whose verdict is `escalate` is compiled as a denial: a Landlock domain can only be
//! narrowed, so no approval can widen an agent that runs.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{Access, AccessFs, BitFlags, Scope, ABI};
use secops_common::{ActionId, CoreAction, Verdict};

use super::files::{glob_anchors, PROBE_NAME};
use crate::api::{LandlockPath, LandlockPlan};
use crate::engine::{ActionRequest, AgentIdx, Engine, NormalizedPath};
use crate::policy::{EgressDefault, Policy, Rule};

/// Path rules a plan holds at most; past it the walk stops granting (fail closed).
const MAX_PATH_RULES: usize = 50_000;
/// Entries enumerated below one protected subtree to find existing matches of its globs.
const MAX_ENUMERATED: usize = 5_000;
/// Directories the walk descends at most.
const MAX_DEPTH: usize = 24;
/// Ports a TCP connect rule set holds at most (one Landlock rule each).
const MAX_TCP_PORTS: usize = 1_024;
/// Where executables are looked for when an exec rule's glob starts with `**`.
const BINARY_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/bin",
    "/sbin",
];

/// Rights that share the engine's answer: each is granted where none of its actions is
/// denied or escalated by a rule.
#[derive(Clone, Copy)]
struct Group {
    rights: BitFlags<AccessFs>,
    actions: &'static [CoreAction],
}

const EXEC: u8 = 1 << 0;
const READ: u8 = 1 << 1;
const WRITE: u8 = 1 << 2;
const TRUNCATE: u8 = 1 << 3;
const REMOVE: u8 = 1 << 4;
const MAKE: u8 = 1 << 5;
const REFER: u8 = 1 << 6;
const ALL_GROUPS: u8 = (1 << 7) - 1;
/// Groups a non-directory can hold (the others are rights on a directory's entries).
const FILE_GROUPS: u8 = EXEC | READ | WRITE | TRUNCATE;

fn groups() -> [Group; 7] {
    use AccessFs::*;
    [
        Group {
            rights: Execute.into(),
            actions: &[CoreAction::ProcExec],
        },
        Group {
            rights: ReadFile | ReadDir,
            actions: &[CoreAction::SecretRead, CoreAction::FsRead],
        },
        Group {
            rights: WriteFile.into(),
            actions: &[CoreAction::FsWrite],
        },
        Group {
            rights: Truncate.into(),
            actions: &[CoreAction::FsTruncate],
        },
        // Unlink, rmdir, and the source side of a rename.
        Group {
            rights: RemoveFile | RemoveDir,
            actions: &[CoreAction::FsDelete, CoreAction::FsRename],
        },
        Group {
            rights: MakeReg | MakeDir | MakeSym | MakeFifo | MakeSock | MakeChar | MakeBlock,
            actions: &[CoreAction::FsCreate, CoreAction::FsWrite],
        },
        // Renames and links across directories; with it handled the kernel also refuses any
        // that would give the file more rights where it lands than where it was.
        Group {
            rights: Refer.into(),
            actions: &[CoreAction::FsRename, CoreAction::FsLink],
        },
    ]
}

fn rights_of(mask: u8) -> BitFlags<AccessFs> {
    groups()
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .fold(BitFlags::empty(), |acc, (_, g)| acc | g.rights)
}

fn file_rights() -> BitFlags<AccessFs> {
    AccessFs::from_file(ABI::V7)
}

/// The groups `rule` speaks about.
fn rule_groups(rule: &Rule) -> u8 {
    let mut mask = 0;
    for (i, group) in groups().iter().enumerate() {
        if group
            .actions
            .iter()
            .any(|a| rule.actions.contains(&ActionId(*a as u16)))
        {
            mask |= 1 << i;
        }
    }
    mask
}

/// Something protected whatever the rules say (secops' own files), with the groups denied.
#[derive(Clone, Debug)]
pub(crate) struct Fixed {
    pub(crate) path: PathBuf,
    pub(crate) denied: u8,
}

impl Fixed {
    /// Every right denied at and below `path` (secops' state, pins, policy, socket).
    pub(crate) fn everything(path: PathBuf) -> Fixed {
        Fixed {
            path,
            denied: ALL_GROUPS,
        }
    }

    /// Nothing written, made, removed or moved below `path`, which may still be read (the
    /// cgroup filesystem: writing a `cgroup.procs` is how a process would leave its cgroup).
    pub(crate) fn read_only(path: PathBuf) -> Fixed {
        Fixed {
            path,
            denied: WRITE | TRUNCATE | REMOVE | MAKE | REFER,
        }
    }
}

struct Compiler<'a> {
    engine: &'a Engine,
    agent: AgentIdx,
    /// Paths some rule names, with the groups it speaks about: the walk descends to them.
    anchors: BTreeMap<PathBuf, u8>,
    /// A rule written against a symlinked path also holds at its target: (target, written).
    aliases: Vec<(PathBuf, PathBuf)>,
    fixed: &'a [Fixed],
    grants: BTreeMap<PathBuf, BitFlags<AccessFs>>,
    unexpressed: Vec<String>,
}

impl Compiler<'_> {
    /// Which of the `wanted` groups are allowed at `path` (no rule denies or escalates any
    /// of their actions). A path the engine cannot take allows nothing.
    fn allowed(&self, path: &Path, wanted: u8) -> u8 {
        let mut mask = wanted;
        for fixed in self.fixed {
            if path.starts_with(&fixed.path) {
                mask &= !fixed.denied;
            }
        }
        mask = self.allowed_as_written(path, mask);
        for (target, written) in &self.aliases {
            if let Ok(rest) = path.strip_prefix(target) {
                mask = self.allowed_as_written(&written.join(rest), mask);
            }
        }
        mask
    }

    fn allowed_as_written(&self, path: &Path, wanted: u8) -> u8 {
        if wanted == 0 {
            return 0;
        }
        let Some(normalized) = path.to_str().and_then(|p| NormalizedPath::new(p).ok()) else {
            return 0;
        };
        let mut mask = 0;
        for (i, group) in groups().iter().enumerate() {
            if wanted & (1 << i) == 0 {
                continue;
            }
            let denied = group.actions.iter().any(|core| {
                let mut request = ActionRequest::new(Some(self.agent), ActionId(*core as u16));
                if *core == CoreAction::ProcExec {
                    request.binary = Some(&normalized);
                } else {
                    request.path = Some(&normalized);
                }
                let decision = self.engine.decide(&request);
                // Only rules count, as in the inode compiler: defaults would deny every read
                // under `locked` autonomy.
                decision.rule_id.is_some() && decision.verdict != Verdict::Allow
            });
            if !denied {
                mask |= 1 << i;
            }
        }
        mask
    }

    /// The groups rules name something for strictly below `dir`.
    fn named_below(&self, dir: &Path) -> u8 {
        let fixed = self
            .fixed
            .iter()
            .filter(|f| f.path.starts_with(dir) && f.path != dir)
            .fold(0, |acc, f| acc | f.denied);
        let mut prefix = dir.as_os_str().as_bytes().to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        let start = PathBuf::from(std::ffi::OsStr::from_bytes(&prefix));
        self.anchors
            .range(start..)
            .take_while(|(p, _)| p.as_os_str().as_bytes().starts_with(&prefix))
            .fold(fixed, |acc, (_, groups)| acc | groups)
    }

    fn grant(&mut self, path: &Path, rights: BitFlags<AccessFs>) {
        if rights.is_empty() {
            return;
        }
        if self.grants.len() >= MAX_PATH_RULES && !self.grants.contains_key(path) {
            self.unexpressed.push(format!(
                "more than {MAX_PATH_RULES} path rules: what is left of the walk gets no \
                 rights (denied)"
            ));
            return;
        }
        *self.grants.entry(path.to_path_buf()).or_default() |= rights;
    }

    /// Grants the `pending` groups at or below `dir` wherever the engine allows them.
    fn walk(&mut self, dir: &Path, pending: u8, depth: usize) {
        let child = self.allowed(&dir.join(PROBE_NAME), pending);
        let deep = self.allowed(&dir.join(PROBE_NAME).join(PROBE_NAME), pending);
        let settled = pending & !self.named_below(dir) & !(child ^ deep);
        self.grant(dir, rights_of(settled & child));
        let descend = pending & !settled;
        if descend == 0 {
            return;
        }
        if depth >= MAX_DEPTH {
            self.unexpressed.push(format!(
                "{} is more than {MAX_DEPTH} directories deep: nothing below it is granted",
                dir.display()
            ));
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            // Not followed: the kernel judges a symlink's target by the target's own path.
            let Ok(meta) = path.symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                self.walk(&path, descend, depth + 1);
            } else if !meta.file_type().is_symlink() {
                let own = self.allowed(&path, descend & FILE_GROUPS);
                self.grant(&path, rights_of(own) & file_rights());
            }
        }
    }

    /// Existing entries below `root` whose verdict for `groups` differs from their
    /// directory's (`/a/**/.env` finds each `.env`): anchors, so the walk reaches them.
    fn enumerate(&mut self, root: &Path, groups: u8) {
        let mut stack = vec![root.to_path_buf()];
        let mut seen = 0;
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let around = self.allowed(&dir.join(PROBE_NAME), groups);
            for entry in entries.flatten() {
                seen += 1;
                if seen > MAX_ENUMERATED {
                    self.unexpressed.push(format!(
                        "{}: more than {MAX_ENUMERATED} entries below it; files past them that \
                         a rule protects keep their directory's rights",
                        root.display()
                    ));
                    return;
                }
                let path = entry.path();
                if self.allowed(&path, groups) != around {
                    *self.anchors.entry(path.clone()).or_default() |= groups;
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                }
            }
        }
    }
}

/// The agent's policy as a Landlock ruleset. `fixed`: secops' own files and the cgroup
/// filesystem, protected whatever the rules say.
pub(crate) fn compile(engine: &Engine, agent: AgentIdx, fixed: &[Fixed]) -> LandlockPlan {
    let policy = engine.policy();
    let mut compiler = Compiler {
        engine,
        agent,
        anchors: BTreeMap::new(),
        aliases: Vec::new(),
        fixed,
        grants: BTreeMap::new(),
        unexpressed: Vec::new(),
    };
    let Some(spec) = policy.agents.get(agent.0 as usize) else {
        return not_compiled("the agent is not in the policy");
    };
    let homes = policy.homes_of(spec);
    let mut subtrees = BTreeMap::new();
    for rule in policy
        .rules
        .iter()
        .filter(|r| r.applies_to(Some(&spec.name)))
    {
        let groups = rule_groups(rule);
        if groups == 0 {
            continue;
        }
        let protects = rule.verdict != Some(Verdict::Allow);
        let selected = rule.selectors.paths.iter().chain(&rule.selectors.binaries);
        // An exception is where a grant is: it anchors, but has nothing to protect.
        let excepted = rule
            .unless
            .iter()
            .flat_map(|u| u.paths.iter().chain(&u.binaries));
        let patterns = selected
            .map(|p| (p, protects))
            .chain(excepted.map(|p| (p, false)));
        for (pattern, protects) in patterns {
            for glob in pattern.expand(homes, Some(&spec.workspace)) {
                for (path, subtree) in glob_anchors(&glob) {
                    // `dir/**` is answered by the probes alone; only a glob that goes on
                    // past its `**` has matches to look for.
                    let subtree = subtree && !ends_at_recursion(&glob);
                    if path == Path::new("/") && subtree {
                        root_glob(&mut compiler, rule, &glob, groups, protects, &mut subtrees);
                        continue;
                    }
                    if let Ok(target) = path.canonicalize() {
                        if target != path {
                            compiler.aliases.push((target.clone(), path.clone()));
                            *compiler.anchors.entry(target.clone()).or_default() |= groups;
                            if subtree && protects {
                                *subtrees.entry(target).or_default() |= groups;
                            }
                        }
                    }
                    *compiler.anchors.entry(path.clone()).or_default() |= groups;
                    if subtree && protects {
                        *subtrees.entry(path).or_default() |= groups;
                    }
                }
            }
        }
    }
    compiler.aliases.sort();
    compiler.aliases.dedup();
    for (root, groups) in subtrees {
        compiler.enumerate(&root, groups);
    }
    compiler.walk(Path::new("/"), ALL_GROUPS, 0);

    let (tcp_connect, tcp_why) = tcp_ports(policy, &spec.name);
    let mut unexpressed = compiler.unexpressed;
    unexpressed.sort();
    unexpressed.dedup();
    LandlockPlan {
        handled_fs: rights_of(ALL_GROUPS).bits(),
        paths: compiler
            .grants
            .into_iter()
            .map(|(path, access)| LandlockPath {
                path,
                access: access.bits(),
            })
            .collect(),
        tcp_connect,
        tcp_why,
        scopes: Scope::from_all(ABI::V6).bits(),
        unexpressed,
    }
}

/// Whether `glob`'s only recursion is its end (`/a/*/**`): then the probes below each
/// anchor answer for everything under it.
fn ends_at_recursion(glob: &str) -> bool {
    glob.ends_with("/**") && glob.matches("**").count() == 1
}

/// A glob that starts with `**`: executables are looked for where binaries live; for the
/// other rights it cannot be held.
fn root_glob(
    compiler: &mut Compiler<'_>,
    rule: &Rule,
    glob: &str,
    groups: u8,
    protects: bool,
    subtrees: &mut BTreeMap<PathBuf, u8>,
) {
    if !protects {
        return;
    }
    if groups & EXEC != 0 {
        // `**/sudo`: only that name is looked up; a wildcard in the name enumerates.
        let name = glob.rsplit('/').next().unwrap_or(glob);
        let literal = !name.contains(['*', '?', '[', '{', '\\']);
        for dir in BINARY_DIRS {
            let dir = Path::new(dir);
            if !dir.is_dir() || dir.is_symlink() {
                continue;
            }
            if literal {
                let candidate = dir.join(name);
                if candidate.symlink_metadata().is_ok() {
                    *compiler.anchors.entry(candidate).or_default() |= EXEC;
                }
            } else {
                *subtrees.entry(dir.to_path_buf()).or_default() |= EXEC;
            }
        }
    }
    if groups & !EXEC != 0 {
        compiler.unexpressed.push(format!(
            "rule {}: {glob} has a wildcard at the root; Landlock grants by hierarchy, so \
             its matches are not protected by this layer",
            rule.id
        ));
    } else {
        compiler.unexpressed.push(format!(
            "rule {}: {glob} is applied to the executables in {} as they are now (a copy \
             elsewhere, or one made later, is not judged by this layer)",
            rule.id,
            BINARY_DIRS.join(", ")
        ));
    }
}

/// The TCP ports the agent's egress allowlist may reach, when it is port-expressible: every
/// allowed entry names its ports (Landlock judges ports, not addresses), and the DNS
/// resolvers' ports (the daemon redirects port 53 to its own resolver).
fn tcp_ports(policy: &Policy, agent: &str) -> (Option<Vec<u16>>, String) {
    let Some(egress) = policy.egress.get(agent) else {
        return match policy.defaults.egress {
            EgressDefault::Allow => (
                None,
                "not handled: the policy allows all egress for this agent".to_owned(),
            ),
            EgressDefault::Deny => (
                Some(Vec::new()),
                "no TCP connect: the policy allows this agent no egress".to_owned(),
            ),
        };
    };
    let mut ports = std::collections::BTreeSet::new();
    for entry in &egress.allow {
        if entry.ports.is_empty() {
            return (
                None,
                "not handled: an allowlist entry allows every port (Landlock judges ports, \
                 not addresses; the cgroup egress programs judge both)"
                    .to_owned(),
            );
        }
        for range in &entry.ports {
            if usize::from(range.hi - range.lo) + ports.len() >= MAX_TCP_PORTS {
                return (
                    None,
                    format!(
                        "not handled: the allowlist's ports are more than {MAX_TCP_PORTS} \
                         (one rule each); the cgroup egress programs judge them"
                    ),
                );
            }
            ports.extend(range.lo..=range.hi);
        }
    }
    ports.extend(egress.dns_resolvers.iter().map(|r| r.port()));
    ports.insert(53);
    let ports: Vec<u16> = ports.into_iter().collect();
    let why = format!(
        "TCP connect only to ports {} (the union of the allowlist's; addresses are judged by \
         the cgroup egress programs)",
        describe_ports(&ports)
    );
    (Some(ports), why)
}

fn describe_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn not_compiled(why: &str) -> LandlockPlan {
    // Everything handled, nothing granted: an agent the daemon cannot compile for gets no
    // file access at all rather than all of it.
    LandlockPlan {
        handled_fs: rights_of(ALL_GROUPS).bits(),
        paths: Vec::new(),
        tcp_connect: Some(Vec::new()),
        tcp_why: why.to_owned(),
        scopes: Scope::from_all(ABI::V6).bits(),
        unexpressed: vec![why.to_owned()],
    }
}

/// The groups (as a mask) `action` falls in: what a Landlock plan decides for it.
fn action_groups(action: CoreAction) -> u8 {
    groups()
        .iter()
        .enumerate()
        .filter(|(_, g)| g.actions.contains(&action))
        .fold(0, |acc, (i, _)| acc | 1 << i)
}

/// Whether the plan denies `action` on `path` (as the file tracepoints report it): a right
/// for it is handled and no grant covers the path, or the one that does lacks the right.
/// Judged by path, as Landlock walks it; the caller says it is the plan's answer.
pub(crate) fn plan_denies(plan: &LandlockPlan, action: CoreAction, path: &Path) -> bool {
    let mask = action_groups(action);
    if mask == 0 {
        return false;
    }
    let needed = match action {
        // The entry the call acts on is judged at its directory for these.
        CoreAction::FsDelete | CoreAction::FsRename => rights_of(REMOVE).bits() & plan.handled_fs,
        // An existing file is opened, executed or truncated: its file rights decide.
        _ if mask & FILE_GROUPS != 0 => {
            (rights_of(mask & FILE_GROUPS) & file_rights()).bits() & plan.handled_fs
        }
        _ => rights_of(mask).bits() & plan.handled_fs,
    };
    if needed == 0 {
        return false;
    }
    let judged = match action {
        CoreAction::FsDelete | CoreAction::FsRename => path.parent().unwrap_or(path),
        _ => path,
    };
    let granted = plan
        .paths
        .iter()
        .filter(|p| judged.starts_with(&p.path))
        .fold(0u64, |acc, p| acc | p.access);
    // Any one of the needed rights missing denies (REMOVE_FILE or REMOVE_DIR: either does
    // the job for the call, so one is enough to let it through).
    let any_of = matches!(action, CoreAction::FsDelete | CoreAction::FsRename);
    if any_of {
        granted & needed == 0
    } else {
        granted & needed != needed
    }
}

/// One line for `secops status` and `secops run`: what the plan holds.
pub(crate) fn summary(plan: &LandlockPlan) -> String {
    let tcp = match &plan.tcp_connect {
        Some(ports) if ports.is_empty() => "no TCP connect".to_owned(),
        Some(ports) => format!("TCP connect to {} port(s)", ports.len()),
        None => "TCP not handled".to_owned(),
    };
    format!(
        "{} path rule(s) granting the complement of the protected trees (write, truncate, \
         create, delete, rename/link across directories, read, exec); {tcp}; signals and \
         abstract unix sockets scoped to the agent; escalations are denied (approvals cannot \
         widen a running agent on this layer){}",
        plan.paths.len(),
        if plan.unexpressed.is_empty() {
            String::new()
        } else {
            format!(
                "; {} policy item(s) not expressible",
                plan.unexpressed.len()
            )
        }
    )
}

#[cfg(test)]
mod tests;
