//! Developer tasks for secops: `cargo xtask <task>`.
//!
//! - `test`: everything CI runs: formatting, clippy with warnings denied, the release
//!   Debian package, every unit and host integration test (the package test installs that
//!   package), then the VM tests on all four kernels (`vm-test --all-kernels`).
//! - `run`: builds secops and runs the daemon with `policies/default.yaml`, state in
//!   `/var/lib/secops` (installing missing Debian packages first when root).
//! - `bench`: the criterion benchmarks (engine decisions, audit appends).
//! - `deps`: checks the tools the build needs and says which Debian packages provide them;
//!   as root, `deps --install` installs what is missing.
//! - `package`: the Debian package (`target/debian/secops_VERSION_ARCH.deb`); see
//!   `package.rs`.
//! - `vm-test`: boots a Debian kernel with BPF LSM under qemu and runs the in-guest
//!   scenarios (`vm-tests/`); see `vm/mod.rs` and `vm-tests/README.md`.

mod package;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

/// What the build needs, and the Debian package each comes from: a command on PATH, or a
/// file (a header) by its path.
const NEEDS: &[(Need, &str)] = &[
    (Need::Command("cc"), "gcc"),
    (Need::Command("make"), "make"),
    (Need::Command("pkg-config"), "pkg-config"),
    (Need::Command("clang"), "clang"),
    (Need::File("/usr/include/bpf/bpf_helpers.h"), "libbpf-dev"),
    (Need::File("/usr/include/seccomp.h"), "libseccomp-dev"),
    (Need::File("/usr/include/linux/bpf.h"), "linux-libc-dev"),
    // Host tests of the DNS layer: a real upstream resolver and real resolver clients.
    (Need::Command("dnsmasq"), "dnsmasq-base"),
    (Need::Command("dig"), "bind9-dnsutils"),
    (Need::Command("nslookup"), "bind9-dnsutils"),
    // vm-test: the emulator, the guest's shell and mount tools, and the apt/dpkg tools that
    // fetch and unpack the kernel package.
    (Need::Command("qemu-system-x86_64"), "qemu-system-x86"),
    (Need::Command("busybox"), "busybox-static"),
    (Need::Command("apt-get"), "apt"),
    (Need::Command("dpkg-deb"), "dpkg"),
    (Need::Command("ldd"), "libc-bin"),
    // The audit witness tests send checkpoints to a real rsyslogd they start.
    (Need::File("/usr/sbin/rsyslogd"), "rsyslog"),
    // package: building the .deb, and what its tests check it with (lintian, the unit with
    // systemd-analyze, the installed daemon under exactly the unit's capabilities).
    (Need::Command("dpkg-shlibdeps"), "dpkg-dev"),
    (Need::Command("strip"), "binutils"),
    (Need::Command("lintian"), "lintian"),
    (Need::Command("systemd-analyze"), "systemd"),
    (Need::Command("addgroup"), "adduser"),
    (Need::Command("setpriv"), "util-linux"),
    (Need::Command("man"), "man-db"),
    // metrics: promtool checks the Prometheus text format, Python's prometheus_client the
    // OpenMetrics one.
    (Need::Command("promtool"), "prometheus"),
    (
        Need::Package("python3-prometheus-client"),
        "python3-prometheus-client",
    ),
    // the Python client: installed with pip into a fresh venv, type-checked with mypy.
    (Need::Package("python3-venv"), "python3-venv"),
    (Need::Command("mypy"), "mypy"),
];

enum Need {
    Command(&'static str),
    File(&'static str),
    /// A Debian package that is there by name (a Python module, a package of packages).
    Package(&'static str),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("run") => run(&args[1..]),
        Some("bench") => cargo(&["bench", "--workspace"]),
        Some("deps") => deps(args.iter().any(|a| a == "--install")),
        Some("vm-test") => vm_test(&args[1..]),
        Some("package") => deps(is_root())
            .and_then(|()| package::package(&args[1..], workspace_root()?, &target_dir()?)),
        _ => {
            eprintln!("usage: cargo xtask <test | run [DAEMON ARGS] | bench | deps [--install] | package [--out DIR] | vm-test [OPTIONS]>");
            eprintln!("  run    build, then run `secops daemon` with policies/default.yaml (state in /var/lib/secops)");
            eprintln!(
                "  test   fmt check, clippy -D warnings, cargo test --workspace, vm-test --all-kernels (what CI runs)"
            );
            eprintln!("  bench  criterion benchmarks: engine decisions and audit appends");
            eprintln!(
                "  deps   check build tools; --install installs missing Debian packages (root)"
            );
            eprintln!(
                "  package  build the Debian package (target/debian/secops_VERSION_ARCH.deb)"
            );
            eprintln!("  vm-test  boot a Debian kernel with BPF LSM under qemu and run the VM scenarios (--help)");
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
    deps(is_root())?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The release package first: the package test installs exactly what ships, and the VM
    // tests reuse the release build.
    package::package(&[], workspace_root()?, &target_dir()?)?;
    let deb = package::built_deb(&target_dir()?)?;
    std::env::set_var("SECOPS_DEB", &deb);
    cargo(&["test", "--workspace"])?;
    // Every scenario on each suite's newest kernel: a Debian kernel update that breaks a
    // program fails CI the day it is published.
    vm::vm_test(&["--all-kernels".to_owned()], &target_dir()?, is_root())
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

/// Builds secops and replaces this process with the daemon, so Ctrl-C stops it.
fn run(daemon_args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    deps(is_root())?;
    let secops = release_secops()?;
    let root = workspace_root()?;
    let policy = root.join("policies/default.yaml");
    eprintln!(
        "xtask: {} --log info daemon --policy {} {}",
        secops.display(),
        policy.display(),
        daemon_args.join(" ")
    );
    let err = Command::new(&secops)
        .args(["--log", "info", "daemon", "--policy"])
        .arg(&policy)
        .args(daemon_args)
        .exec();
    Err(anyhow::Error::new(err).context(format!("starting {}", secops.display())))
}

/// Builds the release `secops` (what ships) and says where it is.
fn release_secops() -> anyhow::Result<std::path::PathBuf> {
    cargo(&[
        "build",
        "--release",
        "--package",
        "secops-daemon",
        "--bin",
        "secops",
    ])?;
    Ok(target_dir()?.join("release/secops"))
}

fn vm_test(args: &[String]) -> anyhow::Result<()> {
    let root = is_root();
    deps(root)?;
    vm::vm_test(args, &target_dir()?, root)
}

fn workspace_root() -> anyhow::Result<&'static std::path::Path> {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `<workspace>/target`.
fn target_dir() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or(workspace_root()?.join("target")))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn have(need: &Need) -> bool {
    match need {
        Need::Command(tool) => Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success()),
        Need::File(path) => std::path::Path::new(path).exists(),
        Need::Package(name) => Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", name])
            .output()
            .is_ok_and(|o| o.stdout.ends_with(b" installed")),
    }
}

/// Checks the build's needs; with `install` (as root) installs the missing Debian packages,
/// otherwise names them.
fn deps(install: bool) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = NEEDS
        .iter()
        .filter(|(need, _)| !have(need))
        .map(|&(_, package)| package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !install || !is_root() {
        bail!(
            "missing build dependencies; install the Debian packages: apt-get install {}",
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
