//! Compiles every `src/*.bpf.c` with clang for target bpf into `OUT_DIR`, where `lib.rs`
//! embeds the objects. The programs are C because Rust BPF needs a nightly rust-src and
//! bpf-linker, which the build environment does not have (see DESIGN.md, "Why C").

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGES: &str = "clang libbpf-dev";

fn main() {
    if let Err(message) = build() {
        // Cargo shows a failed build script's stderr: make it the whole story, what failed
        // and which Debian packages fix a missing tool, without a panic's backtrace.
        eprintln!("\nsecops-ebpf: {message}\n");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let src = manifest_dir.join("src");
    let include = manifest_dir.join("include");

    println!("cargo:rerun-if-env-changed=SECOPS_CLANG");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed={}", include.display());
    for dir in [&src, &include] {
        for file in files_in(dir)? {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }

    let clang = env::var("SECOPS_CLANG").unwrap_or_else(|_| "clang".to_owned());
    check_clang(&clang)?;
    check_libbpf_headers(&clang)?;

    let arch = target_arch_define()?;
    let mut sources: Vec<PathBuf> = files_in(&src)?
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    if sources.is_empty() {
        return Err(format!("no *.bpf.c files in {}", src.display()));
    }
    for source in &sources {
        let file_name = source
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("odd source file name {}", source.display()))?;
        let stem = file_name.trim_end_matches(".bpf.c");
        let object = out_dir.join(format!("{stem}.bpf.o"));
        let mut cmd = Command::new(&clang);
        cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg("-I")
            .arg(&include);
        // `-target bpf` drops the host's multiarch include directory, where Debian keeps
        // <asm/types.h> (needed by <linux/types.h>).
        for dir in multiarch_include_dirs() {
            cmd.arg("-idirafter").arg(dir);
        }
        cmd.arg("-c").arg(source).arg("-o").arg(&object);
        let output = cmd
            .output()
            .map_err(|e| format!("running {clang} for {}: {e}", source.display()))?;
        if !output.status.success() {
            return Err(format!(
                "compiling {} failed:\n{}",
                source.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    Ok(())
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    Ok(entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect())
}

fn check_clang(clang: &str) -> Result<(), String> {
    let output = Command::new(clang).arg("--version").output().map_err(|e| {
        format!(
            "cannot run `{clang}` ({e}). The BPF programs are C compiled by clang; install the \
             Debian packages: apt-get install {PACKAGES} (or set SECOPS_CLANG to a clang binary)"
        )
    })?;
    if !output.status.success() {
        return Err(format!(
            "`{clang} --version` failed; install the Debian packages: apt-get install {PACKAGES}"
        ));
    }
    Ok(())
}

/// libbpf's `bpf/bpf_helpers.h` comes from libbpf-dev; say so instead of letting the first
/// `#include` fail with a bare "file not found".
fn check_libbpf_headers(clang: &str) -> Result<(), String> {
    let mut cmd = Command::new(clang);
    cmd.args(["-target", "bpf", "-fsyntax-only", "-x", "c", "-"]);
    for dir in multiarch_include_dirs() {
        cmd.arg("-idirafter").arg(dir);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {clang}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(b"#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n")
            .map_err(|e| format!("writing to {clang}: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("running {clang}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "clang cannot find libbpf's <bpf/bpf_helpers.h> (or the kernel's <linux/bpf.h>); \
             install the Debian packages: apt-get install {PACKAGES}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// `__TARGET_ARCH_*` for libbpf's headers, from the architecture the programs will run on.
fn target_arch_define() -> Result<&'static str, String> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").map_err(|e| e.to_string())?;
    Ok(match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "riscv64" => "riscv",
        "s390x" => "s390",
        "powerpc64" => "powerpc",
        other => return Err(format!("no BPF target arch define for {other}")),
    })
}

fn multiarch_include_dirs() -> Vec<PathBuf> {
    // Headers come from the build host, so its architecture names the directory.
    let host = env::var("HOST").unwrap_or_default();
    let arch = host.split('-').next().unwrap_or_default();
    let dir = PathBuf::from(format!("/usr/include/{arch}-linux-gnu"));
    if dir.is_dir() {
        vec![dir]
    } else {
        Vec::new()
    }
}
