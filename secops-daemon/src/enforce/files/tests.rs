use crate::enforce::inode::kernel_dev;
use std::path::Path;
use std::sync::Arc;

use secops_common::kernel::{RULE_ALLOW, RULE_ALLOW_COUNTED, RULE_DENY, RULE_ESCALATE};

use super::*;
use crate::policy::parse_policy_str;

/// A directory tree for one agent, and the policy about it.
struct Fixture {
    dir: tempfile::TempDir,
    engine: Engine,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for d in ["ws", "protected/sub", "home/.ssh", "bin", "state", "modes"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    for f in [
        "protected/keep.txt",
        "home/.ssh/id_rsa",
        "bin/nc",
        "bin/tool",
        "ws/a.txt",
    ] {
        std::fs::write(root.join(f), "x").expect("write");
    }
    // A hardlink of the key made before the agent started, inside its workspace.
    std::fs::hard_link(root.join("home/.ssh/id_rsa"), root.join("ws/prelinked")).expect("link");
    let t = root.display();
    let source = format!(
        r#"
version: 1
defaults:
  homes: [{t}/home]
agents:
  - name: a
    workspace: {t}/ws
    autonomy: semi
rules:
  - id: ws
    actions: ["fs:*"]
    paths: ["${{workspace}}/**"]
    risk: low
  - id: protected
    actions: [fs:delete, fs:rename, fs:link, fs:truncate, fs:write, fs:create]
    paths: ["{t}/protected/**"]
    verdict: deny
    risk: high
  - id: modes
    actions: [fs:chmod]
    paths: ["{t}/modes/**"]
    verdict: deny
    risk: high
  - id: secrets
    actions: [secret:read, fs:read]
    paths: ["~/.ssh/**"]
    verdict: deny
    risk: critical
    hard: true
  - id: nc
    actions: [proc:exec]
    binaries: ["{t}/bin/nc"]
    verdict: escalate
    risk: high
  - id: bins
    actions: [proc:exec]
    binaries: ["{t}/bin/*"]
    risk: low
  # An exec allowlist: every other file is denied for exec, so every workspace file has a
  # denied operation (and an entry of its own), the hardlink to the key among them.
  - id: exec.elsewhere
    actions: [proc:exec]
    binaries: ["/**"]
    unless:
      binaries: ["{t}/bin/*"]
    verdict: deny
    risk: high
"#
    );
    let policy = parse_policy_str(Path::new("t.yaml"), &source).unwrap_or_else(|e| panic!("{e}"));
    Fixture {
        dir,
        engine: Engine::new(Arc::new(policy)),
    }
}

impl Fixture {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn compile(&self, builtin: &[BuiltinProtection]) -> CompiledFiles {
        self.compile_after(builtin, &Followed::default())
    }

    /// Compiles again after a compile whose protected objects were `previous`.
    fn compile_after(&self, builtin: &[BuiltinProtection], previous: &Followed) -> CompiledFiles {
        let target = AgentTarget {
            engine_index: self.engine.agent_index("a").expect("agent a"),
            kernel_index: 7,
            workspace: self.path("ws"),
        };
        compile(
            &self.engine,
            &[target],
            &[PathBuf::from("/")],
            builtin,
            previous,
        )
    }
}

/// What the LSM programs' walk answers for `op` on `path` (which may not exist yet): the
/// nearest entry from the object up, `own` on the object, `child` one level up, `deep`
/// further up.
fn walk(compiled: &CompiledFiles, path: &Path, op: usize) -> (u8, Arc<str>) {
    let mut depth = 0;
    let mut current = Some(path);
    while let Some(p) = current {
        if let Some(key) = inode_key(7, p) {
            if let Some(rule) = compiled.entries.get(&key) {
                let [own, child, deep] = split(rule);
                let at = match depth {
                    0 => own,
                    1 => child,
                    _ => deep,
                };
                return (at.verdict[op], compiled.rule_id(u32::from(at.rule[op])));
            }
        }
        depth += 1;
        current = p.parent();
    }
    panic!("no entry on the way up from {}", path.display());
}

fn verdict(compiled: &CompiledFiles, path: &Path, op: usize) -> u8 {
    walk(compiled, path, op).0
}

#[test]
fn protected_directory_covers_its_files_and_names_created_later() {
    let f = fixture();
    let c = f.compile(&[]);
    let keep = f.path("protected/keep.txt");
    assert_eq!(
        walk(&c, &keep, OP_DELETE),
        (RULE_DENY, Arc::from("protected"))
    );
    assert_eq!(verdict(&c, &keep, OP_TRUNCATE), RULE_DENY);
    assert_eq!(verdict(&c, &keep, OP_READ), RULE_ALLOW);
    // Not there at compile time: judged by the directory's verdicts.
    assert_eq!(
        verdict(&c, &f.path("protected/new.txt"), OP_WRITE),
        RULE_DENY
    );
    assert_eq!(
        verdict(&c, &f.path("protected/sub/later/x"), OP_DELETE),
        RULE_DENY
    );
    // The directory itself: the pattern `protected/**` names it too.
    assert_eq!(verdict(&c, &f.path("protected"), OP_RENAME), RULE_DENY);
    // The workspace is the agent's. Its rule is low risk: deletes and renames there are
    // counted, not reported one by one.
    for op in [OP_WRITE, OP_TRUNCATE, OP_READ] {
        assert_eq!(verdict(&c, &f.path("ws/a.txt"), op), RULE_ALLOW, "op {op}");
        assert_eq!(
            verdict(&c, &f.path("ws/new/deeper"), op),
            RULE_ALLOW,
            "op {op}"
        );
    }
    for op in [OP_DELETE, OP_RENAME] {
        assert_eq!(
            walk(&c, &f.path("ws/a.txt"), op),
            (RULE_ALLOW_COUNTED, Arc::from("ws")),
            "op {op}"
        );
        assert_eq!(
            verdict(&c, &f.path("ws/new/deeper"), op),
            RULE_ALLOW_COUNTED
        );
    }
}

#[test]
fn a_protected_file_keeps_its_verdict_under_another_name() {
    let f = fixture();
    let c = f.compile(&[]);
    assert_eq!(
        walk(&c, &f.path("home/.ssh/id_rsa"), OP_READ),
        (RULE_DENY, Arc::from("secrets"))
    );
    // The hardlink in the workspace is the same inode, and that entry comes first.
    assert_eq!(
        walk(&c, &f.path("ws/prelinked"), OP_READ),
        (RULE_DENY, Arc::from("secrets"))
    );
    assert_eq!(verdict(&c, &f.path("ws/a.txt"), OP_READ), RULE_ALLOW);
}

#[test]
fn exec_verdicts_follow_the_binary_rules() {
    let f = fixture();
    let c = f.compile(&[]);
    assert_eq!(
        walk(&c, &f.path("bin/nc"), OP_EXEC),
        (RULE_ESCALATE, Arc::from("nc"))
    );
    assert_eq!(verdict(&c, &f.path("bin/tool"), OP_EXEC), RULE_ALLOW);
    // Renamed in place, it is still the same inode.
    let renamed = f.path("bin/renamed");
    std::fs::rename(f.path("bin/nc"), &renamed).expect("rename");
    assert_eq!(verdict(&c, &renamed, OP_EXEC), RULE_ESCALATE);
    // The fallback: no rule, except that a file without a name is not executed.
    let fallback = c.entries[&InodeKey {
        agent_index: 7,
        dev: 0,
        ino: 0,
    }];
    assert_eq!(fallback.own[OP_EXEC], RULE_DENY);
    assert!(fallback.deep.iter().all(|&v| v == RULE_ALLOW));
}

#[test]
fn builtin_protection_cannot_be_loosened_by_rules() {
    let f = fixture();
    let socket_dir = f.path("ws/run");
    std::fs::create_dir_all(&socket_dir).expect("mkdir");
    let c = f.compile(&[
        BuiltinProtection {
            path: f.path("state"),
            connect_allowed: false,
        },
        BuiltinProtection {
            path: socket_dir.clone(),
            connect_allowed: true,
        },
    ]);
    for op in [OP_READ, OP_WRITE, OP_DELETE, OP_EXEC] {
        assert_eq!(
            walk(&c, &f.path("state/audit.db"), op),
            (RULE_DENY, Arc::from(BUILTIN_RULE_ID))
        );
        assert_eq!(verdict(&c, &f.path("state/a/b/c"), op), RULE_DENY);
    }
    // Inside the workspace, which rule `ws` allows: the built-in entry still wins.
    assert_eq!(
        verdict(&c, &socket_dir.join("secops.sock"), OP_DELETE),
        RULE_DENY
    );
    assert_eq!(
        verdict(&c, &socket_dir.join("secops.sock"), OP_CONNECT),
        RULE_ALLOW
    );
}

#[test]
fn event_paths_are_rebuilt_from_the_anchor_and_the_names() {
    let f = fixture();
    let c = f.compile(&[]);
    let protected = inode_key(7, &f.path("protected")).expect("stat");
    let names = vec!["keep.txt".to_owned(), "sub".to_owned()];
    assert_eq!(
        c.event_path(protected, 2, &names),
        f.path("protected/sub/keep.txt").display().to_string()
    );
    // Unknown anchor: the names alone, marked as partial.
    let unknown = InodeKey {
        agent_index: 7,
        dev: 1,
        ino: 1,
    };
    assert_eq!(c.event_path(unknown, 2, &names), "…/sub/keep.txt");
    let to_root = vec!["b".to_owned(), "a".to_owned(), "/".to_owned()];
    assert_eq!(c.event_path(unknown, 9, &to_root), "/a/b");
}

#[test]
fn globs_expand_against_the_filesystem() {
    let f = fixture();
    let t = f.dir.path().display().to_string();
    let anchors = glob_anchors(&format!("{t}/*/.ssh/**"));
    assert!(anchors.contains(&(f.dir.path().to_path_buf(), false)));
    assert!(anchors.contains(&(f.path("home/.ssh"), true)));
    let anchors = glob_anchors(&format!("{t}/bin/*"));
    assert!(anchors.contains(&(f.path("bin"), false)));
    assert!(anchors.contains(&(f.path("bin/nc"), false)));
    // A name that does not exist yet: its directory stands in.
    let anchors = glob_anchors(&format!("{t}/ws/missing/file"));
    assert_eq!(anchors, vec![(f.path("ws"), false)]);
    assert_eq!(glob_anchors("**/.env"), vec![(PathBuf::from("/"), true)]);
}

/// Where the walk cannot be exact it must anchor more, never less: the files a rule names
/// would otherwise get no entry, and the kernel would allow what the engine denies.
#[test]
fn glob_walks_that_cannot_be_exact_fail_closed() {
    let f = fixture();
    let t = f.dir.path().display().to_string();
    // Alternatives that span components are two paths, not a broken `{home` component.
    let anchors = glob_anchors(&format!("{t}/{{home/.ssh,bin}}/**"));
    assert!(
        anchors.contains(&(f.path("home/.ssh"), true)),
        "{anchors:?}"
    );
    assert!(anchors.contains(&(f.path("bin"), true)), "{anchors:?}");
    // More matches than are expanded one by one: the directory becomes an enumerated
    // subtree instead of losing the matches past the limit.
    let many = f.path("many");
    for i in 0..=MAX_GLOB_MATCHES {
        std::fs::create_dir_all(many.join(format!("d{i}"))).unwrap();
    }
    let anchors = glob_anchors(&format!("{t}/many/*/secret"));
    assert!(
        anchors.contains(&(many.clone(), true)),
        "{:?}",
        &anchors[..anchors.len().min(4)]
    );
    assert!(
        anchors.len() < 4,
        "no partial expansion is kept: {}",
        anchors.len()
    );
    // A glob that does not parse anchors its literal prefix's whole subtree.
    assert_eq!(
        glob_anchors(&format!("{t}/bin/[z-a")),
        vec![(f.path("bin"), true)]
    );
}

#[test]
fn kernel_device_numbers_use_the_kernel_encoding() {
    // st_dev 8:1 (glibc: major 8, minor 1) is MKDEV(8, 1) = 8 << 20 | 1 in the kernel.
    assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
    assert_eq!(kernel_dev(libc::makedev(0, 300)), 300);
}

#[test]
fn ancestors_of_builtin_paths_cannot_be_moved_but_keep_their_rules() {
    let f = fixture();
    let nested = f.path("var/lib/secops");
    std::fs::create_dir_all(&nested).expect("mkdir");
    std::fs::write(f.path("var/lib/other.txt"), "x").expect("write");
    let c = f.compile(&[BuiltinProtection {
        path: nested,
        connect_allowed: false,
    }]);
    for dir in ["var/lib", "var", ""] {
        let dir = f.path(dir);
        for op in [OP_RENAME, OP_DELETE] {
            assert_eq!(
                walk(&c, &dir, op),
                (RULE_DENY, Arc::from(BUILTIN_RULE_ID)),
                "{} op {op}",
                dir.display()
            );
        }
        assert_eq!(verdict(&c, &dir, OP_READ), RULE_ALLOW, "{}", dir.display());
    }
    // What is inside them is the rules' business (none here): still allowed.
    let sibling = f.path("var/lib/other.txt");
    for op in [OP_RENAME, OP_DELETE, OP_WRITE] {
        assert_eq!(verdict(&c, &sibling, op), RULE_ALLOW, "op {op}");
    }
    assert_eq!(verdict(&c, &f.path("var/new"), OP_RENAME), RULE_ALLOW);
}

#[test]
fn chmod_and_create_are_judged_with_writes() {
    let f = fixture();
    let c = f.compile(&[]);
    // `protected` denies fs:write and fs:create: the kernel's write bit covers chmod, chown,
    // mkdir and symlink there too.
    assert_eq!(
        walk(&c, &f.path("protected/keep.txt"), OP_WRITE),
        (RULE_DENY, Arc::from("protected"))
    );
    assert_eq!(
        verdict(&c, &f.path("protected/newdir"), OP_WRITE),
        RULE_DENY
    );
    assert_eq!(verdict(&c, &f.path("ws/newdir"), OP_WRITE), RULE_ALLOW);
    // A rule naming fs:chmod alone is enforced in the kernel (by the write bit).
    assert_eq!(
        walk(&c, &f.path("modes/file"), OP_WRITE),
        (RULE_DENY, Arc::from("modes"))
    );
}

/// A tree the rules protect, below an unprotected ancestor the agent may rename.
fn moved_tree_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical tempdir");
    std::fs::create_dir_all(root.join("ws")).expect("mkdir");
    std::fs::create_dir_all(root.join("home/alice/secrets/deep")).expect("mkdir");
    std::fs::write(root.join("home/alice/secrets/key"), "k").expect("write");
    std::fs::write(root.join("home/alice/secrets/deep/more"), "m").expect("write");
    let t = root.display();
    let source = format!(
        r#"
version: 1
agents:
  - name: a
    workspace: {t}/ws
    autonomy: semi
rules:
  - id: secrets
    actions: [secret:read, fs:read, fs:write, fs:delete, fs:rename]
    paths: ["{t}/home/alice/secrets/**"]
    verdict: deny
    risk: critical
"#
    );
    let policy = parse_policy_str(Path::new("t.yaml"), &source).unwrap_or_else(|e| panic!("{e}"));
    Fixture {
        dir,
        engine: Engine::new(Arc::new(policy)),
    }
}

#[test]
fn protection_follows_a_tree_whose_ancestor_was_renamed() {
    let f = moved_tree_fixture();
    let root = f.dir.path().canonicalize().expect("canonical");
    let first = f.compile(&[]);
    let key = root.join("home/alice/secrets/key");
    assert_eq!(walk(&first, &key, OP_READ).0, RULE_DENY);

    std::fs::rename(root.join("home/alice"), root.join("home/alice2")).expect("rename");
    // A decoy where the tree was: the rules' path now names something else, and still gets
    // the rules' verdicts.
    std::fs::create_dir_all(root.join("home/alice/secrets")).expect("mkdir");
    let second = f.compile_after(&[], &first.followed);
    let moved = root.join("home/alice2/secrets");
    assert_eq!(second.moves.len(), 1, "{:?}", second.moves);
    assert_eq!(second.moves[0].current, moved);
    for file in ["key", "deep/more", "created-later"] {
        for op in [OP_READ, OP_WRITE, OP_DELETE] {
            let (verdict, rule) = walk(&second, &moved.join(file), op);
            assert_eq!((verdict, &*rule), (RULE_DENY, "secrets"), "{file} op {op}");
        }
    }
    assert_eq!(
        walk(&second, &root.join("home/alice/secrets/x"), OP_READ).0,
        RULE_DENY
    );
    // Events name the object where it is now.
    let anchor = inode_key(7, &moved).expect("moved tree");
    assert_eq!(second.paths.get(&anchor), Some(&moved));
    // The engine judges the new path as the rules' path (what /v1/check answers).
    let request_path = NormalizedPath::new(&moved.join("key").to_string_lossy()).expect("path");
    let mut request = ActionRequest::new(
        f.engine.agent_index("a"),
        secops_common::ActionId(CoreAction::FsRead as u16),
    );
    request.path = Some(&request_path);
    let decision = f.engine.decide(&request);
    assert_eq!(decision.verdict, Verdict::Deny);
    assert_eq!(decision.rule_id.as_deref(), Some("secrets"));

    // A third compile still follows it, from the second's objects.
    let third = f.compile_after(&[], &second.followed);
    assert_eq!(third.moves, second.moves);
    assert_eq!(walk(&third, &moved.join("key"), OP_READ).0, RULE_DENY);

    // What a compile by path alone (no objects followed) would put in force: nothing.
    let by_path = f.compile(&[]);
    assert_eq!(walk(&by_path, &moved.join("key"), OP_READ).0, RULE_ALLOW);
}

#[test]
fn a_followed_tree_the_rules_no_longer_protect_is_let_go() {
    let f = moved_tree_fixture();
    let root = f.dir.path().canonicalize().expect("canonical");
    let first = f.compile(&[]);
    std::fs::rename(root.join("home/alice"), root.join("home/alice2")).expect("rename");
    let source = format!(
        "version: 1\nagents:\n  - name: a\n    workspace: {}/ws\n    autonomy: semi\n",
        root.display()
    );
    let policy = parse_policy_str(Path::new("t.yaml"), &source).unwrap_or_else(|e| panic!("{e}"));
    let g = Fixture {
        dir: f.dir,
        engine: Engine::new(Arc::new(policy)),
    };
    let second = g.compile_after(&[], &first.followed);
    assert!(second.moves.is_empty());
    assert_eq!(
        walk(&second, &root.join("home/alice2/secrets/key"), OP_READ).0,
        RULE_ALLOW
    );
}
