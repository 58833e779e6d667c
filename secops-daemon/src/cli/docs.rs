//! `secops completions SHELL` and `secops man DIR`: shell completions and man pages, made
//! from the same clap definition the parser uses, so they cannot drift from it. The Debian
//! package ships both (`cargo xtask package` runs these).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

/// Writes the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "secops", &mut out);
    out.flush()?;
    Ok(0)
}

/// Writes one man page per command (`secops.1`, `secops-policy-validate.1`, ...) into `dir`.
pub fn man_pages(dir: &Path) -> anyhow::Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let count = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .count();
    println!("wrote {count} man pages into {}", dir.display());
    Ok(0)
}
