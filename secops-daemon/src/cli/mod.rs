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
mod check;
mod daemon;
mod policy;

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

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and explain policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Decide one action under a policy, record the decision in the audit log, and exit
    /// with its verdict: 0 allow, 1 deny, 2 escalate (3 on error).
    Check(check::CheckArgs),
    /// Verify, read, search and export the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run the daemon: load the policy into the kernel, attach the BPF programs, audit
    /// every kernel event, serve the control socket. Stops on SIGTERM/SIGINT, leaving the
    /// programs pinned so enforcement holds until the next daemon adopts them.
    Daemon(daemon::DaemonArgs),
    /// Show which layers the running daemon enforces on this kernel, and its agents.
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
    Run(daemon::RunArgs),
    /// The approval queue: escalations waiting for a human, and their decisions.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// The agents the running daemon knows, the kill switch, and live autonomy.
    #[command(subcommand)]
    Agents(agents::AgentsCommand),
    /// Freeze every agent at once (the kill switch for all of them); `secops agents thaw NAME`
    /// lets each run again. Exits 1 if any agent could not be frozen.
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
    Teardown {
        #[command(flatten)]
        kernel: daemon::KernelPlaceArgs,
    },
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
    init_logging(&cli.log);
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
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("secops: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
