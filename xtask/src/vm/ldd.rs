//! The shared libraries a host binary loads, including the dynamic loader, as `ldd` names
//! them: those are the paths the guest must have them at.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub fn libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (Debian package libc-bin)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // ldd exits 1 for a static binary and says so on either stream, depending on the libc.
    if is_static(&stdout) || is_static(&stderr) {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed ({}): {stderr}", binary.display(), out.status);
    }
    parse(&stdout).with_context(|| format!("reading ldd's output for {}", binary.display()))
}

fn is_static(text: &str) -> bool {
    text.contains("not a dynamic executable") || text.contains("statically linked")
}

fn parse(text: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", the loader as
        // "/lib64/ld-linux-x86-64.so.2 (0x...)", and the vDSO with no path at all.
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let path = rest.trim().split(" (").next().unwrap_or("").trim();
                if path == "not found" || path.is_empty() {
                    bail!("{} is not found on this host", name.trim());
                }
                path
            }
            None => line.split(" (").next().unwrap_or("").trim(),
        };
        if path.starts_with('/') && !libraries.iter().any(|l: &PathBuf| l == Path::new(path)) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_and_loader_but_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd6b5f2000)
\tlibseccomp.so.2 => /lib/x86_64-linux-gnu/libseccomp.so.2 (0x00007f4083ed1000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f408321e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f4083f04000)
";
        assert_eq!(
            parse(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libseccomp.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_missing_library_is_an_error() {
        let err = parse("\tlibseccomp.so.2 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libseccomp.so.2"), "{err}");
    }

    #[test]
    fn static_binaries_need_nothing() {
        assert!(is_static("\tnot a dynamic executable\n"));
        assert!(is_static("\tstatically linked\n"));
    }
}
