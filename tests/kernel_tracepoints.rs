//! The tracepoint programs in this kernel: an agent task's exec (binary and argv head),
//! process exit, unlink/rmdir and rename arrive as events with the right paths, nothing
//! arrives for other tasks, and past the ring buffer's capacity the lost count is exact.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use secops_common::kernel::{Agent, EVENT_EXIT, EVENT_UNLINK};
use secops_common::Verdict;
use secops_daemon::kernel::{
    fs as kfs, split_wait_status, AncestorLookup, Kernel, KernelEvent, LoadOptions,
};
use secops_host_tests::kernel::{make_agent, need_root, run_child, Op, TestCgroup, TestPinDir};

const AGENT_INDEX: u32 = 3;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn load_tagging(pins: &TestPinDir, cgroups: &TestCgroup, options: &LoadOptions) -> Kernel {
    let mut kernel = Kernel::load(&pins.path, options).unwrap_or_else(|e| panic!("load: {e}"));
    kernel
        .attach_tracepoints()
        .unwrap_or_else(|e| panic!("attach_tracepoints: {e}"));
    make_agent(
        kernel.maps_mut(),
        &cgroups.path,
        &cgroups.child("agent"),
        Agent {
            agent_index: AGENT_INDEX,
            ..Agent::default()
        },
    );
    kernel
}

/// A scratch directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(secops_host_tests::kernel::unique_name());
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn agent_exec_exit_unlink_rename_are_reported() {
    if !need_root("agent_exec_exit_unlink_rename_are_reported") {
        return;
    }
    let scratch = Scratch::new();
    let victim = scratch.0.join("victim.txt");
    let old = scratch.0.join("old name.txt");
    let new = scratch.0.join("new-name.txt");
    let dir = scratch.0.join("subdir");
    std::fs::write(&victim, "x").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&old, "y").unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));

    let cgroups = TestCgroup::new(&["agent", "other"]);
    let pins = TestPinDir::new();
    let kernel = load_tagging(&pins, &cgroups, &LoadOptions::default());
    let mut reader = kernel.event_reader().unwrap_or_else(|e| panic!("{e}"));

    // Outside the agent first: must produce nothing.
    let other_victim = scratch.0.join("not-an-agent.txt");
    std::fs::write(&other_victim, "z").unwrap_or_else(|e| panic!("{e}"));
    let outside = run_child(
        Some(&cgroups.child("other")),
        &[
            Op::Unlink(cstr(&other_victim)),
            Op::Exec(c"/bin/true".into(), vec![c"true".into()]),
        ],
    );
    assert_eq!(outside.results, [0, 0]);

    let agent = run_child(
        Some(&cgroups.child("agent")),
        &[
            Op::Unlink(cstr(&victim)),
            Op::Rename(cstr(&old), cstr(&new)),
            Op::Rmdir(cstr(&dir)),
            Op::Exec(
                c"/bin/true".into(),
                vec![c"true".into(), c"--first".into(), c"second arg".into()],
            ),
        ],
    );
    assert_eq!(agent.results, [0, 0, 0, 0], "child ops");
    assert_eq!(agent.status, 0, "/bin/true exit status");
    assert!(!victim.exists() && new.exists() && !dir.exists());

    let events = reader
        .collect_until(Duration::from_secs(5), |evs| {
            evs.iter().any(|e| matches!(e, KernelEvent::Exit { .. }))
        })
        .unwrap_or_else(|e| panic!("reading events: {e}"));
    for event in &events {
        let meta = event.meta();
        assert_eq!(
            meta.tgid, agent.pid,
            "only the agent child is reported: {event:?}"
        );
        assert_eq!(meta.agent_index, AGENT_INDEX);
        assert_eq!(meta.verdict, Verdict::Allow);
        assert!(meta.ts_boot_ns > 0);
    }
    let victim_s = victim.to_string_lossy().into_owned();
    let dir_s = dir.to_string_lossy().into_owned();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            KernelEvent::Unlink {
                dfd, path, flags, ..
            } => {
                assert_eq!(*dfd, -100, "AT_FDCWD");
                if *path == dir_s {
                    assert_eq!(*flags & 0x200, 0x200, "rmdir is AT_REMOVEDIR");
                } else {
                    assert_eq!(*path, victim_s);
                }
                format!("unlink {path}")
            }
            KernelEvent::Rename {
                old_path, new_path, ..
            } => {
                assert_eq!(Path::new(old_path), old);
                assert_eq!(Path::new(new_path), new);
                "rename".into()
            }
            KernelEvent::Exec {
                meta,
                filename,
                argv,
                argv_truncated,
            } => {
                assert_eq!(filename, "/bin/true");
                assert_eq!(argv, &["true", "--first", "second arg"]);
                assert!(!argv_truncated);
                assert_eq!(meta.comm, "true");
                "exec".into()
            }
            KernelEvent::Exit { status, .. } => {
                assert_eq!(split_wait_status(*status), (Some(0), None));
                "exit".into()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            format!("unlink {victim_s}"),
            "rename".into(),
            format!("unlink {dir_s}"),
            "exec".into(),
            "exit".into()
        ]
    );
    kernel.detach_and_unpin().unwrap_or_else(|e| panic!("{e}"));
}

/// The walk that kernels without `bpf_get_current_ancestor_cgroup_id` in tracing programs
/// (5.10) use instead of the helper finds the same agent: a task in a cgroup below the
/// agent's is the agent (with the agent cgroup's id), one beside it is nobody, and each
/// cgroup's answer is cached under its own id.
#[test]
fn the_cgroup_walk_finds_the_agent_of_tasks_below_it() {
    if !need_root("the_cgroup_walk_finds_the_agent_of_tasks_below_it") {
        return;
    }
    let scratch = Scratch::new();
    let victim = scratch.0.join("victim");
    let bystander = scratch.0.join("bystander");
    std::fs::write(&victim, "x").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&bystander, "x").unwrap_or_else(|e| panic!("{e}"));
    let cgroups = TestCgroup::new(&["agent", "agent/tool", "agent/tool/deeper", "other"]);
    let pins = TestPinDir::new();
    let options = LoadOptions {
        egress: false,
        ancestor_lookup: AncestorLookup::Walk,
        ..LoadOptions::default()
    };
    let kernel = load_tagging(&pins, &cgroups, &options);
    let mut reader = kernel.event_reader().unwrap_or_else(|e| panic!("{e}"));

    let outside = run_child(
        Some(&cgroups.child("other")),
        &[Op::Unlink(cstr(&bystander))],
    );
    assert_eq!(outside.results, [0]);
    let agent = run_child(
        Some(&cgroups.child("agent/tool/deeper")),
        &[Op::Unlink(cstr(&victim))],
    );
    assert_eq!(agent.results, [0]);
    let events = reader
        .collect_until(Duration::from_secs(5), |evs| {
            evs.iter().any(|e| matches!(e, KernelEvent::Exit { .. }))
        })
        .unwrap_or_else(|e| panic!("reading events: {e}"));
    let agent_id = kfs::cgroup_id(&cgroups.child("agent")).unwrap_or_else(|e| panic!("{e}"));
    let victim_s = victim.to_string_lossy().into_owned();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, KernelEvent::Unlink { path, .. } if *path == victim_s)),
        "the agent's unlink from two cgroups below it: {events:?}"
    );
    for event in &events {
        assert_eq!(event.meta().tgid, agent.pid, "only the agent: {event:?}");
        assert_eq!(event.meta().agent_index, AGENT_INDEX);
        assert_eq!(event.meta().cgroup_id, agent_id, "the agent cgroup's id");
    }
    let cached = kernel
        .maps()
        .cgroup_ancestors()
        .unwrap_or_else(|e| panic!("{e}"));
    let id_of = |name: &str| kfs::cgroup_id(&cgroups.child(name)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cached.contains(&(id_of("agent/tool/deeper"), agent_id)),
        "the deeper cgroup's ancestor is cached: {cached:?}"
    );
    assert!(
        cached.contains(&(id_of("other"), id_of("other"))),
        "`other` is its own ancestor at the agent level, and no agent: {cached:?}"
    );
    kernel.detach_and_unpin().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn long_argv_is_cut_and_flagged() {
    if !need_root("long_argv_is_cut_and_flagged") {
        return;
    }
    let cgroups = TestCgroup::new(&["agent"]);
    let pins = TestPinDir::new();
    let kernel = load_tagging(&pins, &cgroups, &LoadOptions::default());
    let mut reader = kernel.event_reader().unwrap_or_else(|e| panic!("{e}"));
    let long = CString::new("a".repeat(300)).unwrap_or_else(|e| panic!("{e}"));
    let agent = run_child(
        Some(&cgroups.child("agent")),
        &[Op::Exec(c"/bin/true".into(), vec![c"true".into(), long])],
    );
    assert_eq!(agent.results, [0]);
    let events = reader
        .collect_until(Duration::from_secs(5), |evs| {
            evs.iter().any(|e| matches!(e, KernelEvent::Exec { .. }))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let exec = events
        .iter()
        .find_map(|e| match e {
            KernelEvent::Exec {
                argv,
                argv_truncated,
                ..
            } => Some((argv.clone(), *argv_truncated)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no exec event in {events:?}"));
    assert!(exec.1, "truncation flagged");
    assert_eq!(exec.0[0], "true");
    assert_eq!(
        exec.0[1],
        "a".repeat(128 - 5),
        "the head is the first 128 bytes"
    );
}

/// Past the ring buffer's capacity every event is either read or counted as lost.
#[test]
fn lost_events_are_counted_exactly() {
    if !need_root("lost_events_are_counted_exactly") {
        return;
    }
    let cgroups = TestCgroup::new(&["agent"]);
    let pins = TestPinDir::new();
    // One page: room for a handful of events.
    let options = LoadOptions {
        ring_buffer_bytes: 4096,
        egress: false,
        ..LoadOptions::default()
    };
    let kernel = load_tagging(&pins, &cgroups, &options);
    assert_eq!(kernel.ring_buffer_bytes(), 4096);
    let before = kernel
        .maps()
        .lost_counts()
        .unwrap_or_else(|e| panic!("{e}"));

    const N: usize = 200;
    let ops: Vec<Op> = (0..N)
        .map(|i| {
            Op::Unlink(CString::new(format!("/nonexistent/secops-lost-{i}")).unwrap_or_default())
        })
        .collect();
    let agent = run_child(Some(&cgroups.child("agent")), &ops);
    assert!(agent.results.iter().all(|&e| e == libc::ENOENT));

    let mut reader = kernel.event_reader().unwrap_or_else(|e| panic!("{e}"));
    let events = reader
        .collect_until(Duration::from_millis(500), |_| false)
        .unwrap_or_else(|e| panic!("{e}"));
    let read = events
        .iter()
        .filter(|e| matches!(e, KernelEvent::Unlink { .. }))
        .count();
    let lost = kernel
        .maps()
        .lost_counts()
        .unwrap_or_else(|e| panic!("{e}"))
        .since(&before);
    assert!(
        read > 0 && read < N,
        "the buffer held some, not all: read {read}"
    );
    assert_eq!(
        read as u64 + lost.of_kind(EVENT_UNLINK),
        N as u64,
        "read {read} + lost {} must be every unlink",
        lost.of_kind(EVENT_UNLINK)
    );
    // The child's own exit may have found the buffer full too; nothing else is counted.
    assert_eq!(
        lost.total(),
        lost.of_kind(EVENT_UNLINK) + lost.of_kind(EVENT_EXIT),
        "{lost:?}"
    );
}

/// The async reader (what the daemon's tokio task uses) wakes up for an event.
#[test]
fn async_reader_yields_events() {
    if !need_root("async_reader_yields_events") {
        return;
    }
    let cgroups = TestCgroup::new(&["agent"]);
    let pins = TestPinDir::new();
    let options = LoadOptions {
        egress: false,
        exec: false,
        ..LoadOptions::default()
    };
    let kernel = load_tagging(&pins, &cgroups, &options);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let agent_dir = cgroups.child("agent");
    let event = runtime.block_on(async {
        let mut reader = kernel
            .event_reader()
            .and_then(|r| r.into_async())
            .unwrap_or_else(|e| panic!("async reader: {e}"));
        // The child runs on another thread while the reader waits.
        let child = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            run_child(
                Some(&agent_dir),
                &[Op::Unlink(c"/nonexistent/secops-async".into())],
            )
        });
        let event = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .unwrap_or_else(|_| panic!("no event within 5 s"))
            .unwrap_or_else(|e| panic!("{e}"));
        let run = child.join().unwrap_or_else(|_| panic!("child thread"));
        (event, run.pid)
    });
    match event {
        (KernelEvent::Unlink { meta, path, .. }, pid) => {
            assert_eq!(path, "/nonexistent/secops-async");
            assert_eq!(meta.tgid, pid);
        }
        (other, _) => panic!("unexpected {other:?}"),
    }
}

/// A restarted daemon whose tracepoint program differs from the pinned one attaches its
/// own and removes the old link: events keep coming, once each.
#[test]
fn a_changed_tracepoint_program_replaces_the_pinned_link() {
    if !need_root("a_changed_tracepoint_program_replaces_the_pinned_link") {
        return;
    }
    let cgroups = TestCgroup::new(&["agent"]);
    let pins = TestPinDir::new();
    let options = LoadOptions {
        egress: false,
        files: false,
        ..LoadOptions::default()
    };
    let first = load_tagging(&pins, &cgroups, &options);
    drop(first);
    // Make each pinned link hold the other program, as an older secops' would.
    let (exec_pin, exit_pin, tmp) = (
        pins.path.join("link_secops_exec"),
        pins.path.join("link_secops_exit"),
        pins.path.join("link_swap"),
    );
    for (from, to) in [(&exec_pin, &tmp), (&exit_pin, &exec_pin), (&tmp, &exit_pin)] {
        std::fs::rename(from, to).unwrap_or_else(|e| panic!("rename {}: {e}", from.display()));
    }

    let mut second = Kernel::load(&pins.path, &options).unwrap_or_else(|e| panic!("{e}"));
    let report = second
        .attach_tracepoints()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        report,
        [
            ("secops_exec", secops_daemon::kernel::Attached::Replaced),
            ("secops_exit", secops_daemon::kernel::Attached::Replaced)
        ]
    );
    let mut reader = second.event_reader().unwrap_or_else(|e| panic!("{e}"));
    let agent = run_child(
        Some(&cgroups.child("agent")),
        &[Op::Exec(c"/bin/true".into(), vec![c"true".into()])],
    );
    assert_eq!(agent.results, [0]);
    let events = reader
        .collect_until(Duration::from_millis(500), |_| false)
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            KernelEvent::Exec { .. } => "exec",
            KernelEvent::Exit { .. } => "exit",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["exec", "exit"], "once each: {events:?}");
    second.detach_and_unpin().unwrap_or_else(|e| panic!("{e}"));
}
