//! The policy's file, exec and socket-file rules compiled to (dev, inode) entries for the
//! LSM programs (`secops_inodes`; see `secops-ebpf/include/secops.h`).
//!
//! BPF LSM path hooks cannot turn a dentry into a path on every kernel (`bpf_d_path` is not
//! allowed there on 6.1), and paths can be raced anyway, so the kernel judges inodes. The
//! daemon asks its own engine what each operation on each *anchor* would get, and writes the
//! answers: for the anchor itself (`own`), for a child of it and for anything deeper. A
//! program walks from the object up to the nearest entry, so one entry covers files created
//! later in that directory. Anchors are:
//! - the literal part of every rule pattern, with `*` components expanded against the
//!   filesystem (`/home/*/.ssh/**` gives each existing `~/.ssh`);
//! - every mount point, so a walk never leaves a filesystem without an answer;
//! - the agent's workspace, and secops' own state, policy, pins and socket (built in).
//!
//! Below anchors of subtree patterns (`.../**`) and in the workspace, existing files are
//! enumerated (bounded) and get their own entry when the engine says something different for
//! them than for their directory, or when any operation on them is denied: then a hardlink
//! or a rename cannot carry the file out of its protection, because the inode is the key.
//!
//! The kernel enforces what *rules* say. An operation no rule matches is allowed by the
//! kernel (the tracepoint layer still audits it with the engine's default): the engine's
//! defaults would otherwise deny reads of every file under `locked` autonomy.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secops_common::kernel::{
    InodeKey, InodeRule, FS_OPS, OP_CONNECT, OP_DELETE, OP_EXEC, OP_LINK, OP_READ, OP_RENAME,
    OP_TRUNCATE, OP_WRITE, RULE_ALLOW, RULE_ALLOW_COUNTED, RULE_DENY, RULE_ESCALATE, RULE_NONE,
};
use secops_common::{CoreAction, RiskLevel, Verdict};

use super::followed::{Followed, Move};
use super::inode::kernel_inode;
use crate::engine::{ActionRequest, AgentIdx, Engine, MovedPath, NormalizedPath};

/// Files enumerated below one anchor at most; the rest keep their directory's verdict.
pub(crate) const MAX_ENUMERATED: usize = 20_000;
/// Directories an enumeration descends at most.
const MAX_ENUMERATION_DEPTH: usize = 12;
/// Matches of one `*` component expanded against the filesystem at most.
const MAX_GLOB_MATCHES: usize = 5_000;
/// A name no policy pattern names, standing for "any child" when asking the engine.
pub(super) const PROBE_NAME: &str = "\u{1}secops-any";

/// The id audit records give denials by the built-in self-protection (rule index 0).
pub(crate) const BUILTIN_RULE_ID: &str = "secops.self-protection";

/// The action types behind each kernel operation; the strictest verdict of them counts.
fn op_actions(op: usize) -> &'static [CoreAction] {
    match op {
        OP_DELETE => &[CoreAction::FsDelete],
        OP_RENAME => &[CoreAction::FsRename],
        OP_LINK => &[CoreAction::FsLink],
        OP_TRUNCATE => &[CoreAction::FsTruncate],
        // Content, new names (open(O_CREAT), mkdir, symlink, mknod) and modes (chmod): one
        // bit in the kernel, so a rule denying any of them denies all three there.
        OP_WRITE => &[
            CoreAction::FsWrite,
            CoreAction::FsCreate,
            CoreAction::FsChmod,
        ],
        OP_READ => &[CoreAction::SecretRead, CoreAction::FsRead],
        OP_EXEC => &[CoreAction::ProcExec],
        OP_CONNECT => &[CoreAction::NetConnect],
        _ => &[],
    }
}

/// secops' own files, protected from every agent whatever the policy says.
#[derive(Clone, Debug)]
pub(crate) struct BuiltinProtection {
    pub(crate) path: PathBuf,
    /// The API socket: agents connect to it, and may do nothing else to it.
    pub(crate) connect_allowed: bool,
}

/// One agent to compile for.
#[derive(Clone, Debug)]
pub(crate) struct AgentTarget {
    pub(crate) engine_index: AgentIdx,
    pub(crate) kernel_index: u32,
    pub(crate) workspace: PathBuf,
}

/// The compiled entries, and what is needed to read the events they cause.
#[derive(Debug, Default)]
pub(crate) struct CompiledFiles {
    pub(crate) entries: BTreeMap<InodeKey, InodeRule>,
    /// The path each entry was made for (for an event's path: anchor + names below it).
    pub(crate) paths: HashMap<InodeKey, PathBuf>,
    /// Rule ids by index + 1 (index 0 is [`BUILTIN_RULE_ID`]).
    pub(crate) rule_ids: Vec<Arc<str>>,
    /// Anchors whose enumeration stopped at [`MAX_ENUMERATED`].
    pub(crate) truncated: Vec<PathBuf>,
    /// The protected objects, held open for the next compile (see `enforce::followed`).
    pub(crate) followed: Followed,
    /// Protected objects found away from the paths their rules name, compiled where they are.
    pub(crate) moves: Vec<Move>,
}

impl CompiledFiles {
    pub(crate) fn rule_id(&self, rule: u32) -> Arc<str> {
        self.rule_ids
            .get(rule as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(BUILTIN_RULE_ID))
    }

    /// The best path for an event: the anchor's path and the names below it, or the names
    /// alone (`…/a/b`) when the anchor is not known or more names were needed than came.
    pub(crate) fn event_path(&self, anchor: InodeKey, depth: u32, names: &[String]) -> String {
        let depth = depth as usize;
        if let Some(base) = self.paths.get(&anchor) {
            if depth <= names.len() {
                let mut path = base.clone();
                for name in names[..depth].iter().rev() {
                    path.push(name);
                }
                return path.to_string_lossy().into_owned();
            }
        }
        let mut parts: Vec<&str> = names.iter().rev().map(String::as_str).collect();
        if parts.first() == Some(&"/") {
            parts.remove(0);
            return format!("/{}", parts.join("/"));
        }
        format!("…/{}", parts.join("/"))
    }
}

fn inode_key(agent: u32, path: &Path) -> Option<InodeKey> {
    let (dev, ino) = kernel_inode(&std::fs::metadata(path).ok()?);
    Some(InodeKey {
        agent_index: agent,
        dev,
        ino,
    })
}

/// The kernel's code for a rule's verdict on `op`. Deletes and renames a low-risk rule
/// allows are counted, not reported one by one (the LSM programs report allowed deletes and
/// renames; a build in the workspace makes thousands).
fn rule_code(verdict: Verdict, risk: RiskLevel, op: usize) -> u8 {
    match verdict {
        Verdict::Allow if risk == RiskLevel::Low && matches!(op, OP_DELETE | OP_RENAME) => {
            RULE_ALLOW_COUNTED
        }
        Verdict::Allow => RULE_ALLOW,
        Verdict::Escalate => RULE_ESCALATE,
        Verdict::Deny => RULE_DENY,
    }
}

/// Verdicts (RULE_*) and rules for every operation, at one position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct OpVerdicts {
    verdict: [u8; FS_OPS],
    rule: [u16; FS_OPS],
}

impl OpVerdicts {
    fn all(code: u8) -> OpVerdicts {
        OpVerdicts {
            verdict: [code; FS_OPS],
            rule: [0; FS_OPS],
        }
    }

    fn denies_any(&self) -> bool {
        self.verdict
            .iter()
            .any(|&v| v == RULE_DENY || v == RULE_ESCALATE)
    }

    /// Per operation, the stricter of the two (deny > escalate > allow > allow counted:
    /// an itemized report is stricter than a count).
    fn stricter(self, other: OpVerdicts) -> OpVerdicts {
        let rank = |v: u8| match v {
            RULE_DENY => 4,
            RULE_ESCALATE => 3,
            RULE_ALLOW => 2,
            RULE_ALLOW_COUNTED => 1,
            _ => 0,
        };
        let mut out = self;
        for op in 0..FS_OPS {
            if rank(other.verdict[op]) > rank(out.verdict[op]) {
                out.verdict[op] = other.verdict[op];
                out.rule[op] = other.rule[op];
            }
        }
        out
    }
}

fn entry(own: OpVerdicts, child: OpVerdicts, deep: OpVerdicts) -> InodeRule {
    InodeRule {
        own: own.verdict,
        child: child.verdict,
        deep: deep.verdict,
        own_rule: own.rule,
        child_rule: child.rule,
        deep_rule: deep.rule,
    }
}

fn split(rule: &InodeRule) -> [OpVerdicts; 3] {
    [
        OpVerdicts {
            verdict: rule.own,
            rule: rule.own_rule,
        },
        OpVerdicts {
            verdict: rule.child,
            rule: rule.child_rule,
        },
        OpVerdicts {
            verdict: rule.deep,
            rule: rule.deep_rule,
        },
    ]
}

/// Asks the engine about paths for one agent.
struct Judge<'a> {
    engine: &'a Engine,
    agent: AgentIdx,
    rule_index: &'a HashMap<Arc<str>, u16>,
}

impl Judge<'_> {
    /// The verdicts for `path`, or `None` for a path the engine cannot take (then no entry
    /// is made for it, and it keeps its directory's verdicts: never an allow in their place).
    fn at(&self, path: &str) -> Option<OpVerdicts> {
        let normalized = NormalizedPath::new(path).ok()?;
        let mut out = OpVerdicts::all(RULE_NONE);
        for op in 0..FS_OPS {
            for core in op_actions(op) {
                // Core types come first in every registry, in `CoreAction` order.
                let action = secops_common::ActionId(*core as u16);
                let mut request = ActionRequest::new(Some(self.agent), action);
                if *core == CoreAction::ProcExec {
                    request.binary = Some(&normalized);
                } else {
                    request.path = Some(&normalized);
                }
                let decision = self.engine.decide(&request);
                // Only rules count in the kernel (see the module comment).
                let Some(rule_id) = decision.rule_id else {
                    continue;
                };
                let mut one = OpVerdicts::all(RULE_NONE);
                one.verdict[op] = rule_code(decision.verdict, decision.risk, op);
                one.rule[op] = self.rule_index.get(&rule_id).copied().unwrap_or(0);
                out = out.stricter(one);
            }
        }
        // No rule: allowed (see the module comment).
        for v in &mut out.verdict {
            if *v == RULE_NONE {
                *v = RULE_ALLOW;
            }
        }
        Some(out)
    }

    /// own, child and deep verdicts of `path`.
    fn positions(&self, path: &Path) -> Option<[OpVerdicts; 3]> {
        let base = path.to_str()?.trim_end_matches('/');
        Some([
            self.at(if base.is_empty() { "/" } else { base })?,
            self.at(&format!("{base}/{PROBE_NAME}"))?,
            self.at(&format!("{base}/{PROBE_NAME}/{PROBE_NAME}"))?,
        ])
    }
}

/// The anchors of one glob: its literal directory prefix (for names created there later),
/// and its leading components expanded against the filesystem, `*`-style components
/// included, up to a `**` (then the subtree below is enumerated: `true`).
///
/// The glob is walked as the engine matches it (`policy::glob` components, alternatives
/// expanded before splitting, so `{a/b,c}` is two paths). Where the walk cannot go on
/// exactly, it fails closed: a glob that does not parse, or a component with more matches
/// than [`MAX_GLOB_MATCHES`], makes the directories reached so far enumerated subtrees, so
/// every file below them gets its own verdict (up to [`MAX_ENUMERATED`]) instead of being
/// left out of the kernel's map.
pub(super) fn glob_anchors(glob: &str) -> Vec<(PathBuf, bool)> {
    use crate::policy::glob::Component;
    let alternatives = match crate::policy::glob::parse(glob, false) {
        Ok(alternatives) => alternatives,
        Err(e) => {
            let prefix = literal_dir_prefix(glob);
            tracing::warn!(glob, %e, anchor = %prefix.display(), "a path glob that does not parse is anchored as the whole subtree of its literal prefix");
            return vec![(prefix, true)];
        }
    };
    let mut anchors = Vec::new();
    for components in alternatives {
        let mut frontier = vec![PathBuf::from("/")];
        let mut literal_prefix = true;
        let mut walked = true;
        for component in &components {
            let pattern = match component {
                Component::Recursive => {
                    anchors.extend(frontier.drain(..).map(|p| (p, true)));
                    walked = false;
                    break;
                }
                Component::Literal(name) => {
                    let name = std::ffi::OsStr::from_bytes(name);
                    let next: Vec<PathBuf> = frontier
                        .iter()
                        .map(|dir| dir.join(name))
                        .filter(|p| p.symlink_metadata().is_ok())
                        .collect();
                    if next.is_empty() {
                        // Nothing by that name yet: its nearest existing directory is an
                        // anchor, so the engine's verdict for a child there holds.
                        break;
                    }
                    frontier = next;
                    continue;
                }
                Component::Pattern(pattern) => pattern,
            };
            if literal_prefix {
                literal_prefix = false;
                anchors.extend(frontier.iter().map(|p| (p.clone(), false)));
            }
            let mut next = Vec::new();
            let mut overflowed = false;
            for dir in &frontier {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    if pattern.matches(entry.file_name().as_bytes()) {
                        if next.len() >= MAX_GLOB_MATCHES {
                            overflowed = true;
                            break;
                        }
                        next.push(dir.join(entry.file_name()));
                    }
                }
            }
            if overflowed {
                tracing::warn!(glob, limit = MAX_GLOB_MATCHES, "a path glob component matches more names than are expanded one by one; the directories above are enumerated as subtrees instead");
                anchors.extend(frontier.drain(..).map(|p| (p, true)));
                walked = false;
                break;
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        if walked {
            anchors.extend(frontier.into_iter().map(|p| (p, false)));
        }
    }
    anchors
}

/// The directories of `glob` before its first wildcard.
fn literal_dir_prefix(glob: &str) -> PathBuf {
    let mut prefix = PathBuf::from("/");
    for component in glob.split('/').filter(|c| !c.is_empty()) {
        if component.contains(['*', '?', '[', '{', '\\']) {
            break;
        }
        prefix.push(component);
    }
    prefix
}

/// The engine's rule ids by index + 1, as the kernel entries carry them.
fn rule_table(engine: &Engine) -> (Vec<Arc<str>>, HashMap<Arc<str>, u16>) {
    let mut ids: Vec<Arc<str>> = vec![Arc::from(BUILTIN_RULE_ID)];
    let mut index = HashMap::new();
    for rule in &engine.policy().rules {
        let id: Arc<str> = Arc::from(rule.id.as_str());
        let Ok(n) = u16::try_from(ids.len()) else {
            break;
        };
        index.insert(id.clone(), n);
        ids.push(id);
    }
    (ids, index)
}

/// Compiles every agent's entries. `previous` are the protected objects of the last compile:
/// one that moved is compiled where it is now, judged as where its rules name it.
pub(crate) fn compile(
    engine: &Engine,
    agents: &[AgentTarget],
    mount_points: &[PathBuf],
    builtin: &[BuiltinProtection],
    previous: &Followed,
) -> CompiledFiles {
    let (rule_ids, rule_index) = rule_table(engine);
    let mut out = CompiledFiles {
        rule_ids,
        ..CompiledFiles::default()
    };
    // A move is kept while some agent's rules still protect the object's original path.
    let moves: Vec<Move> = previous
        .moves()
        .into_iter()
        .filter(|m| {
            agents.iter().any(|agent| {
                let judge = Judge {
                    engine,
                    agent: agent.engine_index,
                    rule_index: &rule_index,
                };
                judge
                    .positions(&m.original)
                    .is_some_and(|p| p.iter().any(OpVerdicts::denies_any))
            })
        })
        .collect();
    engine.set_moved(
        moves
            .iter()
            .map(|m| MovedPath {
                current: m.current.to_string_lossy().into_owned(),
                original: m.original.to_string_lossy().into_owned(),
            })
            .collect(),
    );
    let mut protected = BTreeMap::new();
    for agent in agents {
        protected.extend(compile_agent(
            engine,
            agent,
            mount_points,
            builtin,
            &rule_index,
            &moves,
            &mut out,
        ));
    }
    for m in &moves {
        tracing::warn!(original = %m.original.display(), current = %m.current.display(), "a protected object is no longer where its rules name it; its protection follows it");
    }
    out.followed = previous.next(&protected, &moves);
    out.moves = moves;
    out
}

/// Compiles one agent's entries into `out`; returns the anchors of its rules that protect
/// something (path -> enumerated), to be followed.
fn compile_agent(
    engine: &Engine,
    agent: &AgentTarget,
    mount_points: &[PathBuf],
    builtin: &[BuiltinProtection],
    rule_index: &HashMap<Arc<str>, u16>,
    moves: &[Move],
    out: &mut CompiledFiles,
) -> BTreeMap<PathBuf, bool> {
    let judge = Judge {
        engine,
        agent: agent.engine_index,
        rule_index,
    };
    let policy = engine.policy();
    let Some(spec) = policy.agents.get(agent.engine_index.0 as usize) else {
        return BTreeMap::new();
    };
    let homes = policy.homes_of(spec);

    // Anchors, each once (two rules often name the same directory, and so do mount
    // points): path -> whether its subtree is enumerated.
    let mut anchors: BTreeMap<PathBuf, bool> = BTreeMap::from([(agent.workspace.clone(), true)]);
    let mut add_anchor = |path: PathBuf, enumerate: bool| {
        *anchors.entry(path).or_insert(false) |= enumerate;
    };
    for rule in policy
        .rules
        .iter()
        .filter(|r| r.applies_to(Some(&spec.name)))
    {
        for pattern in rule.selectors.paths.iter().chain(&rule.selectors.binaries) {
            for glob in pattern.expand(homes, Some(&spec.workspace)) {
                for (path, subtree) in glob_anchors(&glob) {
                    let enumerate = subtree && path != Path::new("/");
                    add_anchor(path, enumerate);
                }
            }
        }
    }
    let rule_anchors = anchors.clone();
    // A protected object that moved is an anchor where it is now; the engine judges that
    // path as the one its rules name (`Engine::set_moved`).
    let mut add_anchor = |path: PathBuf, enumerate: bool| {
        *anchors.entry(path).or_insert(false) |= enumerate;
    };
    for moved in moves {
        add_anchor(moved.current.clone(), moved.subtree);
    }
    for mount in mount_points {
        add_anchor(mount.clone(), false);
    }
    let ancestors = builtin_ancestors(builtin);
    for dir in &ancestors {
        add_anchor(dir.clone(), false);
    }

    for path in anchors.keys() {
        let (Some(key), Some([own, child, deep])) =
            (inode_key(agent.kernel_index, path), judge.positions(path))
        else {
            continue;
        };
        merge_entry(out, key, path, entry(own, child, deep));
    }

    // secops' own files: every operation denied, at every depth, whatever the rules say.
    for protected in builtin {
        let Some(key) = inode_key(agent.kernel_index, &protected.path) else {
            continue;
        };
        let mut deny = OpVerdicts::all(RULE_DENY);
        if protected.connect_allowed {
            deny.verdict[OP_CONNECT] = RULE_ALLOW;
        }
        // Built-in entries replace, never merge: a rule cannot loosen them.
        out.entries.insert(key, entry(deny, deny, deny));
        out.paths.insert(key, protected.path.clone());
    }
    // The directories above them keep their rules' verdicts, except that they stay where
    // they are: renaming one (or replacing it by a rename over it) would move secops' files
    // away from the paths the daemon reads and reloads them by.
    for dir in &ancestors {
        let Some(rule) =
            inode_key(agent.kernel_index, dir).and_then(|key| out.entries.get_mut(&key))
        else {
            continue;
        };
        for op in [OP_RENAME, OP_DELETE] {
            rule.own[op] = RULE_DENY;
            rule.own_rule[op] = 0;
        }
    }

    // The fallback for filesystems no entry covers (pipes, memfds): rules say nothing
    // there, and a file without a name may not be executed.
    let fallback = InodeKey {
        agent_index: agent.kernel_index,
        dev: 0,
        ino: 0,
    };
    let mut own = OpVerdicts::all(RULE_ALLOW);
    own.verdict[OP_EXEC] = RULE_DENY;
    let allow = OpVerdicts::all(RULE_ALLOW);
    out.entries.insert(fallback, entry(own, allow, allow));

    for (root, _) in anchors.iter().filter(|(_, enumerate)| **enumerate) {
        enumerate_below(&judge, agent.kernel_index, root, out);
    }
    rule_anchors
        .into_iter()
        .filter(|(path, _)| {
            inode_key(agent.kernel_index, path)
                .and_then(|key| out.entries.get(&key))
                .is_some_and(|rule| split(rule).iter().any(OpVerdicts::denies_any))
        })
        .collect()
}

/// Every directory above a built-in protected path, `/` excepted (it cannot be renamed).
fn builtin_ancestors(builtin: &[BuiltinProtection]) -> std::collections::BTreeSet<PathBuf> {
    builtin
        .iter()
        .flat_map(|b| b.path.ancestors().skip(1))
        .filter(|dir| dir.parent().is_some())
        .map(Path::to_path_buf)
        .collect()
}

/// Adds `rule` for `key`; an entry already there (the same inode under another name: a
/// bind mount, a symlinked directory, a hardlink) keeps, per operation and position, the
/// stricter verdict of the two.
fn merge_entry(out: &mut CompiledFiles, key: InodeKey, path: &Path, rule: InodeRule) {
    let merged = match out.entries.get(&key) {
        Some(old) => {
            let [a, b, c] = split(old);
            let [x, y, z] = split(&rule);
            entry(a.stricter(x), b.stricter(y), c.stricter(z))
        }
        None => rule,
    };
    out.entries.insert(key, merged);
    out.paths.entry(key).or_insert_with(|| path.to_path_buf());
}

/// Gives the files below `root` their own entry where the walk would get them wrong, or
/// where they are protected (so that a hardlink elsewhere is judged as the file).
fn enumerate_below(judge: &Judge<'_>, agent: u32, root: &Path, out: &mut CompiledFiles) {
    let Some(root_key) = inode_key(agent, root) else {
        return;
    };
    let Some(root_rule) = out.entries.get(&root_key).copied() else {
        return;
    };
    // (directory, its nearest entry, levels below that entry)
    let mut stack = vec![(root.to_path_buf(), root_rule, 0usize)];
    let mut seen = 0usize;
    while let Some((dir, nearest, below)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for item in entries.flatten() {
            seen += 1;
            if seen > MAX_ENUMERATED {
                out.truncated.push(root.to_path_buf());
                return;
            }
            let path = item.path();
            let Ok(meta) = item.metadata() else {
                continue;
            };
            let (dev, ino) = kernel_inode(&meta);
            let key = InodeKey {
                agent_index: agent,
                dev,
                ino,
            };
            let [_, n_child, n_deep] = split(&nearest);
            let inherited_own = if below == 0 { n_child } else { n_deep };
            let judged = if meta.is_dir() {
                judge.positions(&path)
            } else {
                path.to_str()
                    .and_then(|p| judge.at(p))
                    .map(|own| [own, n_deep, n_deep])
            };
            let Some([own, child, deep]) = judged else {
                // Not a path the engine takes: it keeps its directory's verdicts.
                if meta.is_dir() && below < MAX_ENUMERATION_DEPTH {
                    stack.push((path, nearest, below + 1));
                }
                continue;
            };
            let differs =
                own != inherited_own || (meta.is_dir() && (child != n_deep || deep != n_deep));
            let rule = entry(own, child, deep);
            let own_entry = differs || (!meta.is_dir() && own.denies_any());
            if own_entry {
                // A file reached under several names (hardlinks) is judged by the
                // strictest of them.
                merge_entry(out, key, &path, rule);
            }
            // `metadata` of a directory entry does not follow symlinks: a link to a
            // directory is not descended into.
            if meta.is_dir() && below < MAX_ENUMERATION_DEPTH {
                if own_entry {
                    stack.push((path, rule, 0));
                } else {
                    stack.push((path, nearest, below + 1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
