//! `secops agents list|freeze|thaw|kill|set-autonomy` and `secops stop-all`: the running
//! daemon's agents and the kill switch, through its API. Only admins outside every agent
//! cgroup get answers; the daemon refuses (and audits) anyone else, and audits every change
//! with who made it.

use clap::Subcommand;
use serde::Serialize;

use super::daemon::SocketArg;
use crate::api::{AgentStatus, AutonomyChange, StopAll};

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// The agents the daemon runs: cgroup, autonomy (and whether it is overridden), process
    /// count, frozen or not.
    #[command(after_help = "Example:\n  secops agents list")]
    List {
        #[command(flatten)]
        socket: SocketArg,
        #[arg(long)]
        json: bool,
    },
    /// Freeze every process of the agent (cgroup.freeze); new ones start frozen too.
    #[command(after_help = "Example:\n  secops agents freeze coder --reason 'looping on deletes'")]
    Freeze(ControlArgs),
    /// Let a frozen agent run again.
    #[command(after_help = "Example:\n  secops agents thaw coder")]
    Thaw(ControlArgs),
    /// SIGKILL every process of the agent (cgroup.kill) and wait until none is left. A frozen
    /// agent stays frozen (thaw it to start it again).
    #[command(after_help = "Example:\n  secops agents kill coder --reason 'runaway'")]
    Kill(ControlArgs),
    /// Set the agent's autonomy now, over what the policy file says, until changed again
    /// (survives reloads and restarts). LEVEL is full, semi, supervised, locked, or `policy`
    /// to drop the override.
    #[command(
        after_help = "Example:\n  secops agents set-autonomy coder supervised --reason 'new repository'"
    )]
    SetAutonomy {
        name: String,
        level: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    pub name: String,
    /// Why, for the audit log.
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Serialize)]
struct Reason<'a> {
    reason: Option<&'a str>,
}

/// Agent names become one path segment, whatever was typed.
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn print_agent(a: &AgentStatus) {
    println!(
        "{:<16} autonomy {:<24} processes {:<4} {:<7} cgroup {}",
        a.name,
        a.autonomy_text(),
        a.processes,
        if a.frozen { "FROZEN" } else { "running" },
        a.cgroup.display()
    );
    if let Some(o) = &a.autonomy_override {
        println!(
            "{:<16} override set by {} at {}: {}",
            "",
            o.set_by,
            crate::time::format_ns(o.set_at_ns),
            o.reason
        );
    }
}

pub fn run(command: AgentsCommand) -> anyhow::Result<u8> {
    let control = |args: ControlArgs, verb: &str| -> anyhow::Result<u8> {
        let path = format!("/v1/agents/{}/{verb}", segment(&args.name));
        let body = Reason {
            reason: args.reason.as_deref(),
        };
        let status: AgentStatus = args.socket.client().post(&path, &body)?;
        print_agent(&status);
        Ok(0)
    };
    match command {
        AgentsCommand::List { socket, json } => {
            let agents: Vec<AgentStatus> = socket.client().get("/v1/agents")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&agents)?);
            } else {
                agents.iter().for_each(print_agent);
            }
            Ok(0)
        }
        AgentsCommand::Freeze(args) => control(args, "freeze"),
        AgentsCommand::Thaw(args) => control(args, "thaw"),
        AgentsCommand::Kill(args) => control(args, "kill"),
        AgentsCommand::SetAutonomy {
            name,
            level,
            reason,
            socket,
        } => {
            let body = serde_json::json!({ "level": level, "reason": reason });
            let change: AutonomyChange = socket
                .client()
                .post(&format!("/v1/agents/{}/autonomy", segment(&name)), &body)?;
            println!(
                "{}: autonomy {} -> {}{}",
                change.agent,
                change.from,
                change.to,
                if change.overridden {
                    " (overrides the policy until changed again)"
                } else {
                    " (the policy's level)"
                }
            );
            Ok(0)
        }
    }
}

/// `secops stop-all`: exits 1 if any agent could not be frozen.
pub fn stop_all(socket: &SocketArg, reason: Option<&str>, json: bool) -> anyhow::Result<u8> {
    let answer: StopAll = socket.client().post("/v1/stop-all", &Reason { reason })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        answer.agents.iter().for_each(print_agent);
        for failure in &answer.failed {
            eprintln!("secops: NOT FROZEN: {failure}");
        }
    }
    Ok(u8::from(!answer.failed.is_empty()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_become_one_path_segment() {
        assert_eq!(super::segment("coder-2.a_b"), "coder-2.a_b");
        assert_eq!(super::segment("../x y"), "..%2Fx%20y");
    }
}
