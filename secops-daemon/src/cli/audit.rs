//! `secops audit verify|tail|query|export`.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use secops_common::Verdict;

use crate::audit::ocsf::{write_ocsf_line, OcsfContext};
use crate::audit::verify::read_pinned_key;
use crate::audit::witness::load_witness;
use crate::audit::{
    verify_with, AuditPaths, AuditReader, AuditStore, QueryFilter, Record, RewindPolicy,
    StoreOptions, VerifyOptions,
};
use crate::time::{format_ns, parse_time_arg};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole log: the hash chain record by record, every signed checkpoint and key
    /// rotation, the head file, and what witnesses saw. Reports the first record that was
    /// altered, deleted, inserted or reordered, and every witnessed checkpoint the log no
    /// longer holds (truncated, rolled back, rewritten, re-signed). Exits 1 on any problem.
    #[command(
        after_help = "Examples:\n  secops audit verify\n  secops audit verify --public-key /etc/secops/audit-key.pub --witness http://witness.example:8470/secops"
    )]
    Verify(VerifyArgs),
    /// After an operator checked why the log is behind or other than its head file says
    /// (restored from a backup, replaced on purpose): record what was found and who accepted
    /// it, so appenders (the daemon, `secops check`) write to it again.
    #[command(
        after_help = "Example:\n  secops audit accept-rewind --reason \"restored from the 02:00 backup after disk loss\""
    )]
    AcceptRewind {
        /// Why this is accepted; goes into the audit record.
        #[arg(long)]
        reason: String,
        /// A witness the daemon holds the log to (as given to `daemon --audit-witness`):
        /// what it saw that the log contradicts is accepted too. Repeatable.
        #[arg(long)]
        witness: Vec<String>,
    },
    /// Close the open segment (with a checkpoint) so the log goes on in a new one; with
    /// `--archive`, move closed segments out of the live log into DIR (oldest first, each
    /// copied, synced, read back and recorded in the log before it leaves).
    #[command(
        after_help = "Example:\n  secops audit rotate --archive /srv/audit-archive --keep-age 30d"
    )]
    Rotate {
        /// Where closed segments go.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// Keep segments whose newest record is younger than this (e.g. 30d).
        #[arg(long, requires = "archive", value_parser = humantime::parse_duration)]
        keep_age: Option<Duration>,
        /// Keep at most this many bytes of segments live.
        #[arg(long, requires = "archive")]
        keep_bytes: Option<u64>,
    },
    /// Hand the log to a new signing key: the old key seals what is there and signs a
    /// statement naming the new one, so `verify --public-key OLD` still accepts the log and a
    /// key replaced without such a statement is a finding.
    #[command(after_help = "Example:\n  secops audit rotate-key")]
    RotateKey,
    /// Write an evidence bundle: the records of a window (and agent) with the chain that
    /// proves them, the checkpoints, keys and key rotations, the policies in force, OCSF
    /// events and a signed manifest, in one tar file that `verify-bundle` checks offline.
    #[command(
        after_help = "Example:\n  secops audit bundle --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z --agent coder -o coder.bundle"
    )]
    Bundle(super::audit_bundle::BundleArgs),
    /// Check an evidence bundle with nothing but the bundle (no state directory, no daemon):
    /// the chain across the range, checkpoint and manifest signatures, member hashes, that
    /// left-out records are other agents', the policies' bytes. Exits 1 on any problem.
    #[command(
        after_help = "Example:\n  secops audit verify-bundle coder.bundle --public-key audit-key.pub"
    )]
    VerifyBundle(super::audit_bundle::VerifyBundleArgs),
    /// Serve an HTTP witness: keeps every checkpoint line POSTed to it in FILE (appended and
    /// synced, signatures checked) and answers GET with them, for `verify --witness URL`.
    /// Run it on another machine, or at least as another user.
    #[command(
        after_help = "Example:\n  secops audit witness-serve --listen 127.0.0.1:8470 --file /var/lib/secops-witness/checkpoints"
    )]
    WitnessServe {
        /// Where to listen, e.g. 127.0.0.1:8470.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The file the checkpoints are kept in.
        #[arg(long)]
        file: PathBuf,
    },
    /// Show the newest records.
    #[command(after_help = "Example:\n  secops audit tail -n 50 --follow --agent coder")]
    Tail {
        /// How many records.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing new records as they are written (until interrupted).
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per record.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Search the log.
    #[command(
        after_help = "Example:\n  secops audit query --agent coder --action 'fs:*' --verdict deny --since 1h"
    )]
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many records (the oldest first).
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per record.
        #[arg(long)]
        json: bool,
        /// Wait until the log holds record N (the `audit_seq` a durable check answered).
        #[arg(long, value_name = "N")]
        wait_seq: Option<u64>,
        /// Wait up to this long (e.g. 5s) for the first matching record (and record N, with
        /// --wait-seq; 10s there by default): a record the daemon is still writing is found.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
    },
    /// Write records out for other tools.
    #[command(
        after_help = "Example:\n  secops audit export --format ocsf --since 24h -o /tmp/secops-ocsf.jsonl"
    )]
    Export {
        /// `ocsf`: OCSF 1.7 JSON lines (File System 1001, Process 1007, Network 4001, ...).
        /// `jsonl`: secops' own records with their hashes.
        #[arg(long, value_enum, default_value_t = ExportFormat::Ocsf)]
        format: ExportFormat,
        /// Write here instead of standard output. An existing file is not overwritten
        /// unless `--force` is given.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long, requires = "output")]
        force: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A witness to hold the log to: a file of checkpoint lines (a file witness, or the file
    /// a syslog server writes them to) or an http:// URL that answers with them. Repeatable.
    #[arg(long)]
    witness: Vec<String>,
    /// The public key (hex, like keys/audit-signing.pub) the log must be signed with, or
    /// handed to by signed rotations: a log signed by any other key is a problem.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// A directory of archived segments to check with the live ones. Repeatable.
    #[arg(long)]
    archive: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Ocsf,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this agent's records.
    #[arg(long)]
    agent: Option<String>,
    /// Only records with this verdict (allow, deny, escalate).
    #[arg(long)]
    verdict: Option<Verdict>,
    /// Only this action type (`fs:delete`) or category (`fs:*`).
    #[arg(long)]
    action: Option<String>,
    /// Only records from this time on: RFC 3339 (2026-11-22T10:00:00Z) or an age (10m, 2h).
    #[arg(long)]
    since: Option<String>,
    /// Only records before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    fn to_filter(&self) -> anyhow::Result<QueryFilter> {
        Ok(QueryFilter {
            agent: self.agent.clone(),
            verdict: self.verdict,
            action: self.action.clone(),
            since_ns: self
                .since
                .as_deref()
                .map(parse_time_arg)
                .transpose()
                .context("--since")?,
            until_ns: self
                .until
                .as_deref()
                .map(parse_time_arg)
                .transpose()
                .context("--until")?,
            after_seq: None,
            limit: None,
        })
    }
}

/// Records what the head file and the given witnesses found, and who accepted it, so
/// appenders (the daemon, `secops check`) write to the log again.
fn accept_rewind(paths: &AuditPaths, reason: String, witnesses: &[String]) -> anyhow::Result<u8> {
    use crate::audit::witness::at_start::{witness_findings, ACCEPTED_PREFIX};
    let specs = witnesses
        .iter()
        .map(|w| w.parse().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let findings = witness_findings(paths, &specs, crate::audit::witness::hostname().as_deref())?;
    let by = format!(
        "uid {} (secops audit accept-rewind)",
        crate::audit::dir::euid()
    );
    let opened = AuditStore::open_with(
        paths,
        StoreOptions {
            rewind: RewindPolicy::Accept {
                by: by.clone(),
                reason: reason.clone(),
            },
            ..StoreOptions::default()
        },
    );
    let mut store = match opened {
        Ok(store) => {
            if let Some(what) = &store.open_report().rewind_accepted {
                println!("recorded in the audit log: {what}");
            }
            store
        }
        Err(crate::audit::AuditError::NothingToAccept { .. }) if !findings.is_empty() => {
            AuditStore::open(paths, Default::default())?
        }
        Err(crate::audit::AuditError::NothingToAccept { .. }) => {
            println!("nothing to accept");
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    if !findings.is_empty() {
        let text = format!(
            "{ACCEPTED_PREFIX}: its witnesses saw what it does not hold: {}; accepted by {by}: {reason}",
            findings.join("; ")
        );
        store.append(&crate::audit::store::audit_note(
            secops_common::RiskLevel::Critical,
            text.clone(),
        ))?;
        store.checkpoint_now()?;
        println!("recorded in the audit log: {text}");
    }
    Ok(0)
}

pub fn run(command: AuditCommand, state_dir: &Path) -> anyhow::Result<u8> {
    let paths = AuditPaths::new(state_dir);
    match command {
        AuditCommand::Bundle(args) => super::audit_bundle::bundle(args, &paths),
        AuditCommand::VerifyBundle(args) => super::audit_bundle::verify(args),
        AuditCommand::Verify(args) => {
            let mut options = VerifyOptions {
                archives: args.archive,
                ..VerifyOptions::default()
            };
            if let Some(file) = &args.public_key {
                options.pinned_key = Some(read_pinned_key(file)?);
            }
            for w in &args.witness {
                let (checkpoints, bad) = load_witness(w)?;
                for line in bad {
                    eprintln!("witness {w}: a line that is not a checkpoint: {line}");
                }
                options
                    .witnesses
                    .push((format!("witness {w}"), checkpoints));
            }
            let report = verify_with(&paths, &options)?;
            println!("{report}");
            Ok(if report.is_ok() { 0 } else { 1 })
        }
        AuditCommand::AcceptRewind { reason, witness } => accept_rewind(&paths, reason, &witness),
        AuditCommand::Rotate {
            archive,
            keep_age,
            keep_bytes,
        } => {
            let mut store = AuditStore::open(&paths, Default::default())?;
            match store.close_segment()? {
                Some(closed) => println!("closed {}", closed.display()),
                None => println!("the open segment holds no record yet; nothing to close"),
            }
            if let Some(archive_dir) = archive {
                let policy = crate::audit::retention::RetentionPolicy {
                    archive_dir,
                    keep_age,
                    keep_bytes,
                };
                for a in
                    crate::audit::retention::archive(&mut store, &policy, crate::time::now_ns())?
                {
                    println!(
                        "archived records {}..={} to {} (sha256 {})",
                        a.first_seq,
                        a.last_seq,
                        a.path.display(),
                        a.sha256
                    );
                }
            }
            Ok(0)
        }
        AuditCommand::RotateKey => {
            let mut store = AuditStore::open(&paths, Default::default())?;
            let (old, new) = store.rotate_key()?;
            println!(
                "audit signing key {} handed the log to key {}",
                hex::encode(old),
                hex::encode(new)
            );
            Ok(0)
        }
        AuditCommand::WitnessServe { listen, file } => {
            crate::audit::witness::serve(listen, &file)?;
            Ok(0)
        }
        AuditCommand::Tail {
            lines,
            follow,
            json,
            filter,
        } => {
            let reader = AuditReader::open(&paths)?;
            let mut filter = filter.to_filter()?;
            let mut out = io::stdout().lock();
            let mut last = 0;
            for record in reader.tail_matching(&filter, lines)? {
                last = record.seq;
                print_record(&mut out, &record, json)?;
            }
            if !follow {
                return Ok(0);
            }
            // Until interrupted: the process ends on SIGINT/SIGPIPE.
            loop {
                out.flush()?;
                std::thread::sleep(Duration::from_millis(500));
                filter.after_seq = Some(last.max(filter.after_seq.unwrap_or(0)));
                for record in reader.iter(&filter)? {
                    let record = record?;
                    last = record.seq;
                    print_record(&mut out, &record, json)?;
                }
            }
        }
        AuditCommand::Query {
            filter,
            limit,
            json,
            wait_seq,
            wait,
        } => {
            let reader = AuditReader::open(&paths)?;
            let filter = QueryFilter {
                limit,
                ..filter.to_filter()?
            };
            if wait_seq.is_some() || wait.is_some() {
                wait_for_records(&reader, &filter, wait_seq, wait)?;
            }
            let mut out = BufWriter::new(io::stdout().lock());
            for record in reader.iter(&filter)? {
                print_record(&mut out, &record?, json)?;
            }
            out.flush()?;
            Ok(0)
        }
        AuditCommand::Export {
            format,
            output,
            force,
            filter,
        } => {
            let reader = AuditReader::open(&paths)?;
            let filter = filter.to_filter()?;
            let sink: Box<dyn Write> = match &output {
                Some(file) => Box::new(
                    OpenOptions::new()
                        .write(true)
                        .create(true)
                        .create_new(!force)
                        .truncate(true)
                        .open(file)
                        .with_context(|| {
                            format!("creating {} (use --force to overwrite)", file.display())
                        })?,
                ),
                None => Box::new(io::stdout().lock()),
            };
            let mut out = BufWriter::new(sink);
            let context = OcsfContext {
                hostname: crate::audit::witness::hostname(),
            };
            let mut count = 0u64;
            for record in reader.iter(&filter)? {
                let record = record?;
                match format {
                    ExportFormat::Ocsf => write_ocsf_line(&record, &context, &mut out)?,
                    ExportFormat::Jsonl => {
                        serde_json::to_writer(&mut out, &record)?;
                        out.write_all(b"\n")?;
                    }
                }
                count += 1;
            }
            out.flush()?;
            if let Some(file) = output {
                eprintln!("wrote {count} record(s) to {}", file.display());
            }
            Ok(0)
        }
    }
}

/// Waits (polling) until record `seq` is in the log and, with `wait` given, a record matches
/// `filter`; gives up quietly when the time is up (the query then shows what there is).
fn wait_for_records(
    reader: &AuditReader,
    filter: &QueryFilter,
    seq: Option<u64>,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + wait.unwrap_or(Duration::from_secs(10));
    let has = |f: &QueryFilter| -> anyhow::Result<bool> {
        Ok(reader.iter(f)?.next().transpose()?.is_some())
    };
    loop {
        let seq_there = match seq {
            Some(n) => has(&QueryFilter {
                after_seq: Some(n.saturating_sub(1)),
                limit: Some(1),
                ..QueryFilter::default()
            })?,
            None => true,
        };
        let match_there = wait.is_none() || has(filter)?;
        if (seq_there && match_there) || std::time::Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field as one line: newlines, tabs and other control characters written as escapes, so
/// every record is one line whatever an argv or a path held.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        std::borrow::Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

fn print_record(out: &mut impl Write, record: &Record, json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, record)?;
        writeln!(out)?;
        return Ok(());
    }
    let b = &record.body;
    writeln!(
        out,
        "#{seq} {time} {source:<8} agent={agent} {action} {object} -> {verdict} ({risk}) rule={rule}: {reason}",
        seq = record.seq,
        time = format_ns(b.ts_ns),
        source = b.source.as_str(),
        agent = one_line(b.agent.as_deref().unwrap_or("-")),
        action = b.action,
        object = one_line(b.object.as_ref().map_or("-", |o| o.value.as_str())),
        verdict = b.verdict,
        risk = b.risk,
        rule = one_line(b.rule_id.as_deref().unwrap_or("-")),
        reason = one_line(&b.reason),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_field_with_newlines_stays_on_one_line() {
        assert_eq!(super::one_line("rm -rf /x"), "rm -rf /x");
        assert_eq!(
            super::one_line("bash -c 'a\nb'\t\u{1b}[31m"),
            "bash -c 'a\\nb'\\t\\u{1b}[31m"
        );
    }
}
