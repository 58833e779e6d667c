//! Part of `lsm-attacks` (issue 16, item 2): protection follows the object, not its name.
//! The agent renames an ancestor nobody protects of a protected tree, puts a symlink to a
//! lookalike in its old place, the daemon reloads its policy (SIGHUP: a reload compiles the
//! rules by path), and every attack on the tree at its new path must still be refused in the
//! kernel and audited under the tree's rule and its current path; then once more after a
//! second move and a second reload.

use std::path::Path;
use std::time::{Duration, Instant};

use super::lsm_attacks::{run_in_agent, AGENT, WORKSPACE};
use crate::fixtures::{describe, Daemon};

/// The protected tree, below `/srv/outer/inner`, which no rule names.
pub(super) const TREE: &str = "/srv/outer/inner/tree";
pub(super) const RULE: &str = "moved.tree";
const KEEP: &[u8] = b"keep\n";

/// The rule, as a policy list item.
pub(super) fn rule() -> String {
    format!(
        "  - id: {RULE}
    description: a protected tree whose ancestor nobody protects
    actions: [fs:delete, fs:rename, fs:link, fs:truncate, fs:write, fs:create, fs:chmod, secret:read, fs:read]
    paths: [{TREE}/**]
    verdict: deny
    risk: high
"
    )
}

pub(super) fn make_fixtures() -> Result<(), String> {
    for dir in [format!("{TREE}/sub"), format!("{WORKSPACE}/decoy/tree")] {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir}: {e}"))?;
    }
    std::fs::write(format!("{TREE}/keep.txt"), KEEP).map_err(|e| format!("writing keep: {e}"))
}

/// The attacks on the tree at `tree` (its path now): (name, argv). Each must fail.
fn attacks(tree: &str) -> Vec<(&'static str, Vec<String>)> {
    let sh = |script: String| vec!["/bin/sh".to_owned(), "-c".to_owned(), script];
    vec![
        ("append", sh(format!("echo x >> {tree}/keep.txt"))),
        ("truncate", sh(format!(": > {tree}/keep.txt"))),
        (
            "delete",
            vec!["/bin/rm".into(), "-f".into(), format!("{tree}/keep.txt")],
        ),
        ("read", vec!["/bin/cat".into(), format!("{tree}/keep.txt")]),
        (
            "create",
            vec!["/bin/touch".into(), format!("{tree}/sub/new")],
        ),
        (
            "chmod",
            vec![
                "/bin/chmod".into(),
                "0777".into(),
                format!("{tree}/keep.txt"),
            ],
        ),
        (
            "rename-out",
            vec![
                "/bin/mv".into(),
                format!("{tree}/keep.txt"),
                format!("{WORKSPACE}/stolen-from-tree"),
            ],
        ),
    ]
}

/// Runs the class; returns (attacks blocked, a summary) or the problems found.
pub(super) fn run(daemon: &Daemon, cgroup: &Path) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    let mut blocked = 0;
    let step = |argv: &[&str], problems: &mut Vec<String>| match run_in_agent(cgroup, argv) {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            problems.push(format!("{argv:?} failed in the agent\n{}", describe(&out)));
            false
        }
        Err(e) => {
            problems.push(e);
            false
        }
    };
    // The agent moves the ancestor and puts a symlink to a lookalike in its place.
    let decoy = format!("{WORKSPACE}/decoy");
    let moves: [(&str, &[&[&str]]); 2] = [
        (
            "/srv/outer/moved/tree",
            &[
                &["/bin/mv", "/srv/outer/inner", "/srv/outer/moved"],
                &["/bin/ln", "-s", &decoy, "/srv/outer/inner"],
            ],
        ),
        (
            "/srv/outer/again/tree",
            &[&["/bin/mv", "/srv/outer/moved", "/srv/outer/again"]],
        ),
    ];
    for (tree, setup) in moves {
        if !setup.iter().all(|argv| step(argv, &mut problems)) {
            return Err(problems);
        }
        if let Err(e) = reload(daemon) {
            problems.push(e);
            return Err(problems);
        }
        for (name, argv) in attacks(tree) {
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            match run_in_agent(cgroup, &argv) {
                Ok(out) if out.status.success() => {
                    problems.push(format!("moved-tree {name} at {tree} got through"))
                }
                Ok(_) => blocked += 1,
                Err(e) => problems.push(e),
            }
            match std::fs::read(format!("{tree}/keep.txt")) {
                Ok(content) if content == KEEP => {}
                other => problems.push(format!("moved-tree {name}: keep.txt is now {other:?}")),
            }
        }
        if Path::new(&format!("{tree}/sub/new")).exists() {
            problems.push(format!("moved-tree create: {tree}/sub/new exists"));
        }
        if let Err(e) = audited(daemon, tree) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "moved tree: {blocked} attacks blocked and audited after 2 ancestor moves and reloads"
        ))
    } else {
        Err(problems)
    }
}

/// SIGHUP, and wait for the reload's audit record.
fn reload(daemon: &Daemon) -> Result<(), String> {
    let reloads = || -> Result<usize, String> {
        Ok(daemon
            .audit_query(&["--action", "sys:policy"])?
            .iter()
            .filter(|r| {
                r["reason"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("policy reloaded (SIGHUP)"))
            })
            .count())
    };
    let before = reloads()?;
    let pid = daemon.pid().ok_or("the daemon is not running")?;
    let pid = libc::pid_t::try_from(pid).map_err(|e| format!("daemon pid: {e}"))?;
    // SAFETY: kill(2) with the daemon's own pid (> 1) and a valid signal.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(format!("SIGHUP: {}", std::io::Error::last_os_error()));
    }
    let started = Instant::now();
    while reloads()? == before {
        if started.elapsed() > Duration::from_secs(60) {
            return Err("no reload record 60 s after SIGHUP".into());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(())
}

/// Every attack at `tree` is audited as a denial under the rule, naming the current path,
/// and the daemon audited the move.
fn audited(daemon: &Daemon, tree: &str) -> Result<(), String> {
    let wanted = attacks(tree).len();
    let started = Instant::now();
    loop {
        // One query (each is a process start, slow under emulation) for both checks.
        let records = daemon.audit_query(&[])?;
        let denials = records
            .iter()
            .filter(|r| {
                r["agent"] == AGENT
                    && r["verdict"] == "deny"
                    && r["rule_id"] == RULE
                    && r["object"]["value"]
                        .as_str()
                        .is_some_and(|v| v.starts_with(tree))
            })
            .count();
        let move_audited = records.iter().any(|r| {
            r["action"] == "fs:rename" && r["source"] == "daemon" && r["object"]["value"] == tree
        });
        if denials >= wanted && move_audited {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "audit at {tree}: {denials} denials under {RULE} (expected {wanted}), move \
                 audited: {move_audited}"
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}
