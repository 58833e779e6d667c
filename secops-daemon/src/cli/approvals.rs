//! `secops approvals list|show|approve|deny`: the daemon's queue, through its API. Only admins outside every agent cgroup get answers; the daemon
//! refuses (and audits) anyone else.

use clap::Subcommand;
use serde::Deserialize;

use super::daemon::SocketArg;
use super::ticket_table::{ticket_row, HEADER};
use crate::approvals::Ticket;
use crate::time::{format_ns, now_ns};

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Tickets, newest first (open ones unless told otherwise): id, status, age, agent, risk,
    /// action, object and the command line that asked; `--json` has every field.
    #[command(after_help = "Example:\n  secops approvals list --all --limit 20")]
    List {
        #[command(flatten)]
        socket: SocketArg,
        /// Every ticket, decided ones too.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One ticket, whole.
    #[command(after_help = "Example:\n  secops approvals show 17")]
    Show {
        id: u64,
        #[command(flatten)]
        socket: SocketArg,
        #[arg(long)]
        json: bool,
    },
    /// Let the agent do it: the same action on the same object passes until the approval
    /// runs out. Hard-rule denials never reach the queue and cannot be approved.
    #[command(
        after_help = "Example:\n  secops approvals approve 17 --for 30m --reason 'cleanup the ticket asked for'"
    )]
    Approve {
        id: u64,
        /// How long the approval lasts (e.g. 30s, 10m, 2h; at most 24h).
        #[arg(long = "for", default_value = "10m")]
        grant_for: String,
        /// The approval lets the action through once (in the kernel: one syscall), then it
        /// is spent; `--for` still bounds when that use may happen.
        #[arg(long)]
        once: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Watch the open tickets live and decide them with one key: `a` approve (for `--for`),
    /// `o` approve once, `d` deny, `j`/`k` or the arrow keys to choose, `q` to quit.
    #[command(after_help = "Example:\n  secops approvals watch --for 30m")]
    Watch {
        /// How long an approval made here lasts.
        #[arg(long = "for", default_value = "10m")]
        grant_for: String,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1)]
        interval: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Refuse: the ticket is closed and the action stays escalated.
    #[command(after_help = "Example:\n  secops approvals deny 17 --reason 'not in this sprint'")]
    Deny {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(Deserialize)]
struct TicketList {
    tickets: Vec<Ticket>,
}

fn print_ticket(t: &Ticket) {
    println!("{}", ticket_row(t, now_ns(), None));
}

fn print_ticket_long(t: &Ticket) {
    println!("{HEADER}");
    print_ticket(t);
    println!("  reason:     {}", t.reason);
    println!("  rule:       {}", t.rule_id.as_deref().unwrap_or("-"));
    println!("  repeats:    {}", t.count);
    if let Some(command) = &t.command {
        println!("  command:    {command}");
    }
    println!("  source:     {}", t.source);
    println!("  first seen: {}", format_ns(t.first_seen_ns));
    println!("  last seen:  {}", format_ns(t.last_seen_ns));
    if let (Some(by), Some(at)) = (&t.decided_by, t.decided_at_ns) {
        println!("  decided:    {} by {by}", format_ns(at));
    }
    if let Some(r) = &t.decision_reason {
        println!("  because:    {r}");
    }
    if let Some(until) = t.grant_until_ns {
        let once = if t.grant_once { " (one use)" } else { "" };
        println!("  grant until {}{once}", format_ns(until));
    }
}

pub fn run(command: ApprovalsCommand) -> anyhow::Result<u8> {
    match command {
        ApprovalsCommand::List {
            socket,
            all,
            limit,
            json,
        } => {
            let status = if all { "" } else { "&status=open" };
            let list: TicketList = socket
                .client()
                .get(&format!("/v1/approvals?limit={limit}{status}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.tickets)?);
            } else if list.tickets.is_empty() {
                println!("no {}tickets", if all { "" } else { "open " });
            } else {
                println!("{HEADER}");
                list.tickets.iter().for_each(print_ticket);
            }
        }
        ApprovalsCommand::Show { id, socket, json } => {
            let t: Ticket = socket.client().get(&format!("/v1/approvals/{id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                print_ticket_long(&t);
            }
        }
        ApprovalsCommand::Approve {
            id,
            grant_for,
            once,
            reason,
            socket,
        } => {
            let body = serde_json::json!({ "for": grant_for, "once": once, "reason": reason });
            let t: Ticket = socket
                .client()
                .post(&format!("/v1/approvals/{id}/approve"), &body)?;
            print_ticket_long(&t);
        }
        ApprovalsCommand::Watch {
            grant_for,
            interval,
            socket,
        } => return super::watch::run(&socket, &grant_for, interval),
        ApprovalsCommand::Deny { id, reason, socket } => {
            let body = serde_json::json!({ "reason": reason });
            let t: Ticket = socket
                .client()
                .post(&format!("/v1/approvals/{id}/deny"), &body)?;
            print_ticket_long(&t);
        }
    }
    Ok(0)
}
