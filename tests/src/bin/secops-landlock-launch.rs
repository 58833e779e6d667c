//! `secops run` with the registration done by the caller, for the Landlock bench: reads a
//! `POST /v1/agents/{name}/register` answer (JSON) from the file named first, and launches
//! the command after `--` with the same launcher, with its Landlock plan or, given
//! `--without-landlock`, without it. Everything else (cgroup, account, workspace,
//! no_new_privs, seccomp) is the same, so the two runs differ by the Landlock layer only.

use std::ffi::OsString;

use secops_daemon::api::Registered;
use secops_daemon::launcher::{run_in_agent_or_exit, Account, Launch};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        eprintln!("usage: secops-landlock-launch REGISTERED.json [--without-landlock] -- CMD ARGS");
        std::process::exit(2);
    };
    let (options, command) = args.split_at(split);
    let registered: Registered = std::fs::read(&options[0])
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .unwrap_or_else(|e| {
            eprintln!("reading the register answer: {e}");
            std::process::exit(2)
        });
    let without = options.iter().any(|o| o == "--without-landlock");
    let account = Account::from(&registered.run_as);
    let launch = Launch {
        cgroup: &registered.cgroup,
        account: Some(&account),
        workspace: Some(&registered.workspace),
        create_workspace: registered.create_workspace,
        landlock: if without {
            None
        } else {
            registered.landlock.as_ref()
        },
    };
    let (cmd, rest) = command[1..].split_first().unwrap_or_else(|| {
        eprintln!("no command after --");
        std::process::exit(2)
    });
    run_in_agent_or_exit(&launch, cmd, rest, None)
}
