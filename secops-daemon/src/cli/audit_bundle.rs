//! `secops audit bundle` and `secops audit verify-bundle`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::audit::bundle::{build_bundle, verify_bundle, BundleOptions};
use crate::audit::verify::read_pinned_key;
use crate::audit::AuditPaths;
use crate::time::parse_time_arg;

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The window's start: RFC 3339 (2026-11-22T10:00:00Z) or an age (10m, 2h).
    #[arg(long)]
    since: String,
    /// The window's end (same forms; default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only this agent's records are shown; others' stay in the chain as hashes.
    #[arg(long)]
    agent: Option<String>,
    /// Where to write the bundle (a tar file; it must not exist yet).
    #[arg(short, long)]
    output: PathBuf,
    /// A directory of archived segments that are part of the log. Repeatable.
    #[arg(long)]
    archive: Vec<PathBuf>,
    /// The policy file to take a policy's bytes from when no copy of it was kept.
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyBundleArgs {
    /// The bundle (`secops audit bundle -o FILE`).
    file: PathBuf,
    /// The public key (hex) the log must be signed with, or handed to by signed rotations.
    #[arg(long)]
    public_key: Option<PathBuf>,
}

pub fn bundle(args: BundleArgs, paths: &AuditPaths) -> anyhow::Result<u8> {
    let options = BundleOptions {
        since_ns: Some(parse_time_arg(&args.since).context("--since")?),
        until_ns: args
            .until
            .as_deref()
            .map(parse_time_arg)
            .transpose()
            .context("--until")?,
        agent: args.agent,
        archives: args.archive,
        policy_file: args.policy,
        host: crate::audit::witness::hostname(),
    };
    let started = std::time::Instant::now();
    let summary = build_bundle(paths, &options, &args.output)?;
    let m = &summary.manifest;
    eprintln!(
        "wrote {} ({} bytes, {:.2} s): records {}..={}, {} in full, {} redacted, checkpoints {}..={}, {} polic(ies)",
        args.output.display(),
        summary.bytes,
        started.elapsed().as_secs_f64(),
        m.first_seq,
        m.last_seq,
        m.records_full,
        m.records_redacted,
        m.first_checkpoint,
        m.last_checkpoint,
        m.policies.len()
    );
    for n in &m.notes {
        eprintln!("note: {n}");
    }
    Ok(0)
}

pub fn verify(args: VerifyBundleArgs) -> anyhow::Result<u8> {
    let pinned = args
        .public_key
        .as_deref()
        .map(|p: &Path| read_pinned_key(p))
        .transpose()?;
    let report = verify_bundle(&args.file, pinned)?;
    println!("bundle: {}", args.file.display());
    println!("{report}");
    Ok(if report.is_ok() { 0 } else { 1 })
}
