//! The `secops` command line. Each subcommand is one module; this one parses arguments and
//! maps outcomes to exit codes.
//!
//! Exit codes: `check` exits 0 (allow), 1 (deny) or 2 (escalate). Every other command exits
//! 0 when it did what was asked and 1 when it ran but found a problem (an invalid policy, a
//! log that does not verify). Any error, including a mistyped command line, exits 3, so a
//! script can never mistake a usage error for a verdict.

mod action_args;
mod agents;
mod approvals;
mod audit;
mod audit_bundle;
mod check;
mod daemon;
mod docs;
mod policy;
mod ticket_table;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit code of every error.
pub const EXIT_ERROR: u8 = 3;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/secops";

#[derive(Debug, Parser)]
#[command(
    name = "secops",
    version,
    about = "Enforcement agent for hosts that run untrusted AI-agent workloads",
    long_about = "secops applies one action taxonomy, one YAML rule engine and one tamper-evident \
                  audit log to what AI agents do: through the kernel (eBPF) and through the API an \
                  agent framework calls before a tool call.\n\n\
                  Exit codes: `check` exits 0 for allow, 1 for deny, 2 for escalate. `run` exits with \
                  the command's status (125 if the launch failed, 126/127 if the command cannot be \
                  executed / was not found). Other commands exit 0 on success and 1 when they found \
                  a problem. Errors exit 3."
)]
pub struct Cli {
    /// Where secops keeps its state: the audit database and its signing keys. Give each
    /// instance (and each test) its own.
    #[arg(long, global = true, env = "SECOPS_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// The largest policy file (the top-level one and each include) read, in MiB. A
    /// larger policy can also be split into files with `include:`.
    #[arg(
        long,
        global = true,
        env = "SECOPS_MAX_POLICY_FILE_MIB",
        default_value_t = crate::policy::DEFAULT_MAX_FILE_MIB,
        value_parser = clap::value_parser!(u64).range(1..=4096)
    )]
    pub max_policy_file_mib: u64,

    /// Log filter for diagnostics on stderr (e.g. `info`, `secops_daemon=debug`).
    #[arg(long, global = true, env = "SECOPS_LOG", default_value = "warn")]
    pub log: String,

    /// How diagnostics on stderr are written: `text` (coloured only on a terminal) or `json`
    /// (one object per line, for a log collector).
    #[arg(long, global = true, env = "SECOPS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and explain policy files.
    #[command(subcommand)]
    #[command(after_help = "Example:\n  secops policy validate /etc/secops/policy.yaml")]
    Policy(policy::PolicyCommand),
    /// Decide one action under a policy, record the decision in the audit log, and exit
    /// with its verdict: 0 allow, 1 deny, 2 escalate (3 on error).
    #[command(
        after_help = "Example:\n  secops check --policy /etc/secops/policy.yaml --agent coder --action fs:delete --path /etc/passwd"
    )]
    Check(check::CheckArgs),
    /// Verify, read, search and export the audit log.
    #[command(subcommand)]
    #[command(after_help = "Example:\n  secops audit query --verdict deny --since 10m")]
    Audit(audit::AuditCommand),
    /// Run the daemon: load the policy into the kernel, attach the BPF programs, audit
    /// every kernel event, serve the control socket. Stops on SIGTERM/SIGINT, leaving the
    /// programs pinned so enforcement holds until the next daemon adopts them.
    #[command(
        after_help = "Example:\n  secops --log info daemon --policy /etc/secops/policy.yaml --socket-gid secops"
    )]
    Daemon(daemon::DaemonArgs),
    /// Show which layers the running daemon enforces on this kernel, and its agents.
    #[command(after_help = "Example:\n  secops status")]
    Status {
        #[command(flatten)]
        socket: daemon::SocketArg,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a command as an agent: in the agent's cgroup, with no_new_privs and the seccomp
    /// baseline. Exits with the command's status; 125 if the launch failed, 126/127 if the
    /// command cannot be executed / was not found.
    #[command(after_help = "Example:\n  secops run --agent coder -- python3 agent.py")]
    Run(daemon::RunArgs),
    /// The approval queue: escalations waiting for a human, and their decisions.
    #[command(subcommand)]
    #[command(after_help = "Example:\n  secops approvals watch")]
    Approvals(approvals::ApprovalsCommand),
    /// The agents the running daemon knows, the kill switch, and live autonomy.
    #[command(subcommand)]
    #[command(
        after_help = "Example:\n  secops agents freeze coder --reason 'deleting the wrong tree'"
    )]
    Agents(agents::AgentsCommand),
    /// Freeze every agent at once (the kill switch for all of them); `secops agents thaw NAME`
    /// lets each run again. Exits 1 if any agent could not be frozen.
    #[command(after_help = "Example:\n  secops stop-all --reason 'incident 42'")]
    StopAll {
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        socket: daemon::SocketArg,
        #[arg(long)]
        json: bool,
    },
    /// Remove what a daemon left pinned (programs, links, maps) and the empty secops cgroups.
    /// Enforcement stops.
    #[command(
        after_help = "Example:\n  secops teardown --pin-dir /sys/fs/bpf/secops --cgroup-root secops"
    )]
    Teardown {
        #[command(flatten)]
        kernel: daemon::KernelPlaceArgs,
    },
    /// Print the shell completion script for SHELL on standard output.
    #[command(after_help = "Example:\n  secops completions bash > /etc/bash_completion.d/secops")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page for every command into DIR (secops.1, secops-policy-validate.1, ...).
    #[command(after_help = "Example:\n  secops man /tmp/man && man /tmp/man/secops-run.1")]
    Man {
        /// The directory to write into (made if missing).
        dir: PathBuf,
    },
}

/// The format of the diagnostics on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.log, cli.log_format);
    crate::policy::set_max_file_mib(cli.max_policy_file_mib);
    let outcome = match cli.command {
        Command::Policy(command) => policy::run(command),
        Command::Check(args) => check::run(args, &cli.state_dir),
        Command::Audit(command) => audit::run(command, &cli.state_dir),
        Command::Daemon(args) => daemon::run_daemon(args, &cli.state_dir),
        Command::Status { socket, json } => daemon::status(&socket, json),
        Command::Run(args) => daemon::run_agent(args),
        Command::Approvals(command) => approvals::run(command),
        Command::Agents(command) => agents::run(command),
        Command::StopAll {
            reason,
            socket,
            json,
        } => agents::stop_all(&socket, reason.as_deref(), json),
        Command::Teardown { kernel } => daemon::teardown(&kernel),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man_pages(&dir),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("secops: error: {}", error_text(&e));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// An error and its causes, each said once: a cause whose text its wrapper already repeats
/// (a `thiserror` message that embeds its source) is not printed again.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn init_logging(filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colour codes only for a person at a terminal: a file or the journal gets plain text.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command a person can type shows an example in its `--help`.
    #[test]
    fn every_command_has_an_example_in_its_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                let example = sub.get_after_help().is_some_and(|h| {
                    let h = h.to_string();
                    h.starts_with("Example:\n  secops ") || h.starts_with("Examples:\n  secops ")
                });
                if !example {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "secops", &mut missing);
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
    }

    #[test]
    fn a_cause_its_wrapper_already_says_is_not_said_again() {
        #[derive(Debug, thiserror::Error)]
        #[error("unknown action type \"fs:delet\"")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("--action: {0}")]
        struct Outer(#[source] Inner);
        let e = anyhow::Error::new(Outer(Inner));
        assert_eq!(error_text(&e), "--action: unknown action type \"fs:delet\"");
        let e = anyhow::Error::new(Inner).context("reading /x");
        assert_eq!(
            error_text(&e),
            "reading /x: unknown action type \"fs:delet\""
        );
    }
}
