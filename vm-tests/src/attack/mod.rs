//! `secops-attack`: the attack suite's guest program. It runs inside an agent cgroup (its
//! caller puts it there), does ordinary work in its workspace, then tries each attack for
//! real, and prints one line per operation and a summary ([`report`]). Each attack does the
//! damage when nothing enforces (the host self-test `tests/attack_unenforced.rs` shows it),
//! and is judged on the state of its target, not on an error code alone ([`judge`]).
//!
//! Order: the benign operations first (so no attack that got through can spoil them), then
//! the attacks, with the ones that end something for good last among their group (the kill
//! after the other daemon attacks) and the cgroup escape last of all.

mod args;
mod benign;
mod bpf;
mod cgroup;
mod daemon;
mod exec;
mod files;
mod fixture;
pub mod judge;
mod module;
mod mounts;
mod net;
mod process;
pub mod report;
mod secret;
mod sys;
mod uring;

use std::ffi::OsString;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;

pub use exec::MARKER;
use judge::Outcome;
use report::{AttackResult, BenignResult, Summary};

pub struct Ctx {
    args: args::Args,
    prot: fixture::Protected,
}

type Attack = (&'static str, fn(&Ctx) -> Outcome);
type Benign = (&'static str, fn(&Ctx) -> Result<(), String>);

pub const ATTACKS: &[Attack] = &[
    ("unlink", files::unlink),
    ("unlinkat-dirfd", files::unlinkat_dirfd),
    ("rmdir", files::rmdir),
    ("rename-over", files::rename_over),
    ("rename-away", files::rename_away),
    ("hardlink-write", files::hardlink_write),
    ("truncate", files::truncate),
    ("open-trunc", files::open_trunc),
    ("open-write", files::open_write),
    ("uring-unlinkat", uring::uring_unlinkat),
    ("uring-renameat", uring::uring_renameat),
    ("uring-openat", uring::uring_openat),
    ("symlink-delete", files::symlink_delete),
    ("chmod-protected", files::chmod),
    ("mkdir-protected", files::mkdir),
    ("symlink-protected", files::symlink),
    ("renamed-denied-binary", exec::renamed_denied_binary),
    ("memfd-exec", exec::memfd_exec),
    ("ldso-exec", exec::ldso_exec),
    ("secret-read", secret::secret_read),
    ("secret-hardlink-read", secret::secret_hardlink_read),
    ("secret-link", secret::secret_link),
    ("secret-proc-fd", secret::secret_proc_fd),
    ("raw-socket", net::raw_socket),
    ("packet-socket", net::packet_socket),
    ("connect-mapped", net::connect_mapped),
    ("connect-blocked", net::connect_blocked),
    ("ptrace-attach-foreign", process::ptrace_attach),
    ("ptrace-seize-foreign", process::ptrace_seize),
    ("process-vm-writev", process::process_vm_writev),
    ("proc-mem-write", process::proc_mem_write),
    ("pidfd-getfd", process::pidfd_getfd),
    ("kill-foreign", process::kill_foreign),
    ("tgkill-foreign", process::tgkill_foreign),
    ("sigqueue-foreign", process::sigqueue_foreign),
    ("finit-module", module::finit_module),
    ("init-module", module::init_module),
    ("mount-tmpfs", mounts::mount_tmpfs),
    ("bind-over-policy", mounts::bind_over_policy),
    ("pivot-root", mounts::pivot_root),
    ("rename-state-parent", mounts::rename_state_parent),
    ("stop-daemon", daemon::stop_daemon),
    ("ptrace-daemon", daemon::ptrace_daemon),
    ("daemon-mem", daemon::daemon_mem),
    ("kill-daemon", daemon::kill_daemon),
    ("bpf-detach", bpf::bpf_detach),
    ("bpf-prog-ids", bpf::bpf_prog_ids),
    ("umount-pins", mounts::umount_pins),
    ("cgroup-escape", cgroup::cgroup_escape),
];

pub const BENIGN: &[Benign] = &[
    ("file-create-write-read", benign::create_write_read),
    ("file-append", benign::append),
    ("rename-in-workspace", benign::rename),
    ("hardlink-in-workspace", benign::hardlink),
    ("truncate-in-workspace", benign::truncate),
    ("open-trunc-in-workspace", benign::open_trunc),
    ("unlink-in-workspace", benign::unlink),
    ("mkdir-rmdir", benign::mkdir_rmdir),
    ("symlink-unlink-through", benign::symlink_unlink),
    ("uring-openat-workspace", benign::uring_openat),
    ("uring-unlinkat-workspace", benign::uring_unlinkat),
    ("exec-allowed", exec::exec_allowed),
    ("connect-allowed", net::connect_allowed),
    ("connect-allowed-mapped", net::connect_allowed_mapped),
    ("read-system-file", benign::read_system_file),
    ("chmod-mkdir-in-workspace", benign::chmod_in_workspace),
    ("signal-own-child", process::signal_own_child),
    ("ptrace-own-child", process::ptrace_own_child),
];

/// The program's entry: `argv` without the program name.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    match argv.first().and_then(|a| a.to_str()) {
        Some("marker") => {
            say(MARKER);
            ExitCode::SUCCESS
        }
        Some("list") => {
            for (name, _) in BENIGN {
                say(&format!("benign {name}"));
            }
            for (name, _) in ATTACKS {
                say(&format!("attack {name}"));
            }
            ExitCode::SUCCESS
        }
        Some("run") => match args::parse(&argv[1..]) {
            Ok(args) => run(args),
            Err(why) => usage(&why),
        },
        _ => usage("expected `run`, `list` or `marker`"),
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("secops-attack: {why}\n{}", args::USAGE);
    ExitCode::from(2)
}

fn run(args: args::Args) -> ExitCode {
    let selected = |name: &str| {
        args.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    };
    if let Some(only) = &args.only {
        let unknown: Vec<&String> = only
            .iter()
            .filter(|n| !ATTACKS.iter().any(|(a, _)| a == n) && !BENIGN.iter().any(|(b, _)| b == n))
            .collect();
        if !unknown.is_empty() {
            return usage(&format!(
                "--only: unknown names {unknown:?} (see `secops-attack list`)"
            ));
        }
    }
    let benign_plan: Vec<&Benign> = BENIGN.iter().filter(|(n, _)| selected(n)).collect();
    let attack_plan: Vec<&Attack> = ATTACKS.iter().filter(|(n, _)| selected(n)).collect();
    let ctx = Ctx {
        prot: fixture::Protected::new(&args.protected),
        args,
    };
    let mut benign = Vec::new();
    for (name, op) in benign_plan {
        let result = match catch_unwind(AssertUnwindSafe(|| op(&ctx))) {
            Ok(r) => r,
            Err(_) => Err("panicked".into()),
        };
        let line = BenignResult {
            name: (*name).into(),
            ok: result.is_ok(),
            detail: result.err().unwrap_or_default(),
        };
        say(&line.to_string());
        benign.push(line);
    }
    let mut attacks = Vec::new();
    for (name, attack) in attack_plan {
        let outcome = catch_unwind(AssertUnwindSafe(|| attack(&ctx)))
            .unwrap_or_else(|_| Outcome::error("the attack panicked"));
        let line = AttackResult {
            name: (*name).into(),
            verdict: outcome.verdict,
            detail: outcome.detail,
        };
        say(&line.to_string());
        attacks.push(line);
    }
    say(&Summary::count(&attacks, &benign).to_string());
    ExitCode::SUCCESS
}

/// One whole line per write, flushed: children and a console share the output.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_words_and_unique() {
        let mut all: Vec<&str> = ATTACKS.iter().map(|(n, _)| *n).collect();
        all.extend(BENIGN.iter().map(|(n, _)| *n));
        for n in &all {
            assert!(report::valid_name(n), "{n}");
        }
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "duplicate names");
    }

    #[test]
    fn finds_this_binarys_loader() {
        // Test binaries are dynamically linked like secops-attack.
        let interp = exec::interpreter(std::path::Path::new("/proc/self/exe"));
        let interp = interp.expect("readable ELF").expect("a PT_INTERP");
        assert!(interp.to_string_lossy().contains("ld-linux"), "{interp:?}");
    }
}
