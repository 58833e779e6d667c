//! Developer tasks for secops: `cargo xtask <task>`.
//!
//! - `test`: everything CI runs: formatting, clippy with warnings denied, every unit and
//!   host integration test. Later tiers (the VM tests) join it here.
//! - `bench`: the criterion benchmarks (engine decisions, audit appends).
//! - `deps`: checks the tools the build needs and says which Debian packages provide them;
//!   as root, `deps --install` installs what is missing.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

/// Tools the build needs, and the Debian package each comes from.
const TOOLS: &[(&str, &str)] = &[
    ("cc", "gcc"),
    ("make", "make"),
    ("pkg-config", "pkg-config"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("bench") => cargo(&["bench", "--workspace"]),
        Some("deps") => deps(args.iter().any(|a| a == "--install")),
        _ => {
            eprintln!("usage: cargo xtask <test | bench | deps [--install]>");
            eprintln!(
                "  test   fmt check, clippy -D warnings, cargo test --workspace (what CI runs)"
            );
            eprintln!("  bench  criterion benchmarks: engine decisions and audit appends");
            eprintln!(
                "  deps   check build tools; --install installs missing Debian packages (root)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn test() -> anyhow::Result<()> {
    deps(false)?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace"])?;
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn deps(install: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| !have(tool))
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !install || !is_root {
        bail!(
            "missing build tools; install the Debian packages: apt-get install {}",
            missing.join(" ")
        );
    }
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !status.success() {
            bail!("apt-get {} failed", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    let mut install_args = vec!["install", "-y", "-q", "--no-install-recommends"];
    install_args.extend(&missing);
    apt(&install_args)
}
