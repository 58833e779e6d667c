//! `cargo xtask vm-test`: boots a Debian kernel with BPF LSM under qemu with secops and the
//! in-guest runner (`vm-tests/`) in an initramfs, and judges the run from the serial console.
//!
//! - [`apt`]: package lookups and downloads, with the host's sources or a private list
//! - [`kernel`]: the kernel package, unpacked and cached, and what its config says
//! - [`initramfs`] (with [`cpio`] and [`ldd`]): the guest's root filesystem and /init
//! - [`qemu`]: the boot, the console log and the timeout
//! - [`results`]: the verdict from the console
//!
//! Everything lives in `<target>/vm/`: kernels/ (the .deb and its unpacked tree, so a second
//! run downloads nothing), apt/<suite>/ (private lists), initramfs.cpio, last-console.log.

mod apt;
mod cpio;
mod initramfs;
mod kernel;
mod ldd;
mod qemu;
mod results;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use secops_vm_tests::protocol;

use apt::Apt;
use kernel::Kernel;
use qemu::Vm;
use results::Report;

const DEFAULT_TIMEOUT_SECS: u64 = 240;

pub const USAGE: &str = "\
usage: cargo xtask vm-test [--kernel-package NAME] [--suite SUITE [--mirror URI]]
                           [--timeout SECS] [--only SCENARIO[,SCENARIO...]] [--append PARAMS]
                           [--icount SHIFT] [--verbose]
  --kernel-package  a Debian linux-image-* package or metapackage (default linux-image-cloud-amd64)
  --suite           look the package up in another Debian suite (bullseye, trixie, ...) through a
                    private sources list under <target>/vm/apt/SUITE/; the host's apt is untouched
  --mirror          the Debian mirror for --suite (default: the one the host's apt sources use)
  --timeout         seconds before qemu is killed and the run fails (default 240)
  --only            run only these scenarios (`secops-vm-runner --list` names them)
  --append          extra kernel parameters (e.g. `loglevel=7`, or an `lsm=` list to try)
  --icount          guest time counts instructions: each takes 2^SHIFT ns (qemu -icount
                    shift=SHIFT,sleep=off), so timings inside the guest are repeatable whatever
                    the host does; one vCPU (the second does not come up under -icount). For
                    benchmarks: `--only lsm-overhead --icount 3`
  --verbose         copy the guest console to stderr as it runs";

struct Options {
    package: String,
    suite: Option<String>,
    mirror: Option<String>,
    timeout: Duration,
    only: Vec<String>,
    append: Vec<String>,
    icount: Option<u8>,
    verbose: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        package: kernel::DEFAULT_PACKAGE.to_owned(),
        suite: None,
        mirror: None,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        only: Vec::new(),
        append: Vec::new(),
        icount: None,
        verbose: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag {
            "--kernel-package" => o.package = value()?,
            "--suite" => o.suite = Some(value()?),
            "--mirror" => o.mirror = Some(value()?),
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v.parse().ok().filter(|s| *s > 0).with_context(|| {
                    format!("--timeout {v:?} is not a positive number of seconds")
                })?;
                o.timeout = Duration::from_secs(secs);
            }
            "--only" => o.only.extend(
                value()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            "--append" => o.append.push(value()?),
            "--icount" => {
                let v = value()?;
                let shift: u8 = v.parse().ok().filter(|s| *s <= 10).with_context(|| {
                    format!("--icount {v:?}: the shift is a number from 0 to 10")
                })?;
                o.icount = Some(shift);
            }
            "--verbose" | "-v" => o.verbose = true,
            "--help" | "-h" => bail!("{USAGE}"),
            other => bail!("unknown vm-test argument {other:?}\n{USAGE}"),
        }
    }
    if o.mirror.is_some() && o.suite.is_none() {
        bail!("--mirror goes with --suite");
    }
    if let Some(bad) = o.only.iter().find(|n| !protocol::valid_name(n)) {
        bail!("--only {bad:?}: scenario names are letters, digits, - and _");
    }
    Ok(o)
}

pub fn vm_test(args: &[String], target: &Path, is_root: bool) -> Result<()> {
    let options = parse(args)?;
    let started = Instant::now();
    let vm_dir = target.join("vm");
    std::fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;

    let step = Instant::now();
    let kernel = fetch_kernel(&options, &vm_dir, is_root)?;
    let kernel_time = step.elapsed();

    let step = Instant::now();
    let binaries = build_binaries(target)?;
    let build_time = step.elapsed();

    let step = Instant::now();
    let image = build_image(&binaries, &vm_dir)?;
    let image_time = step.elapsed();

    let vm = Vm {
        kernel: kernel.vmlinuz.clone(),
        initrd: image.path.clone(),
        append: kernel_command_line(&kernel, &options.only, &options.append),
        memory_mib: 1024,
        cpus: if options.icount.is_some() { 1 } else { 2 },
        icount: options.icount,
        timeout: options.timeout,
        log: vm_dir.join("last-console.log"),
        echo: options.verbose,
    };
    eprintln!("xtask: booting: {}", describe_command(&vm));
    let boot = vm.boot()?;
    let report = results::evaluate(&boot.console, boot.timed_out, options.timeout.as_secs());

    print_table(&report);
    eprintln!(
        "vm-test: kernel {} | kernel fetch {} | cargo build {} | initramfs {} | boot to results {} | qemu {} | total {}",
        kernel.release,
        secs(kernel_time),
        secs(build_time),
        secs(image_time),
        boot.results_after.map(secs).unwrap_or_else(|| "-".into()),
        secs(boot.elapsed),
        secs(started.elapsed()),
    );
    if let Some(status) = boot.exit.filter(|s| !s.success()) {
        eprintln!("xtask: qemu exited with {status}");
    }
    let (passed, failed) = report.counts();
    eprintln!("vm-test: {passed} passed, {failed} failed");
    if report.passed() {
        return Ok(());
    }
    eprintln!(
        "--- last 40 console lines ({}) ---\n{}\n---",
        vm.log.display(),
        qemu::tail(&boot.console, 40)
    );
    for problem in &report.problems {
        eprintln!("vm-test: {problem}");
    }
    bail!(
        "vm-test failed; the whole console is in {}",
        vm.log.display()
    )
}

fn fetch_kernel(options: &Options, vm_dir: &Path, is_root: bool) -> Result<Kernel> {
    let apt = match &options.suite {
        Some(suite) => Apt::private_suite(
            suite,
            options.mirror.as_deref(),
            &vm_dir.join("apt").join(suite),
            is_root,
        )?,
        None => Apt::system(is_root),
    };
    let kernel = kernel::fetch(&apt, &options.package, &vm_dir.join("kernels"))?;
    eprintln!(
        "xtask: kernel {} ({} {}, {}); {}",
        kernel.release,
        kernel.package.name,
        kernel.package.version,
        if kernel.downloaded {
            "downloaded"
        } else {
            "cached"
        },
        match &kernel.modules {
            Some(dir) => format!("no modules loaded (the package's are in {})", dir.display()),
            None => "the package has no modules".into(),
        }
    );
    for missing in kernel.missing_builtins() {
        eprintln!("xtask: warning: {missing}; scenarios that need it will fail");
    }
    Ok(kernel)
}

/// `secops`, the runner and the attack program, release builds (what ships, and far quicker
/// under emulation).
fn build_binaries(target: &Path) -> Result<Vec<PathBuf>> {
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "secops-daemon",
        "--bin",
        "secops",
        "--package",
        "secops-vm-tests",
        "--bin",
        "secops-vm-runner",
        "--bin",
        "secops-attack",
    ])?;
    let release = target.join("release");
    Ok(vec![
        release.join("secops"),
        release.join("secops-vm-runner"),
        release.join("secops-attack"),
    ])
}

fn build_image(binaries: &[PathBuf], vm_dir: &Path) -> Result<initramfs::Built> {
    let busybox = initramfs::find_busybox()?;
    let image = initramfs::build(&busybox, binaries, &vm_dir.join("initramfs.cpio"))?;
    eprintln!(
        "xtask: initramfs {} ({:.1} MiB; libraries: {})",
        image.path.display(),
        image.bytes as f64 / (1 << 20) as f64,
        image
            .libraries
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(image)
}

fn kernel_command_line(kernel: &Kernel, only: &[String], extra: &[String]) -> String {
    // panic=-1: reboot at once on a panic, which -no-reboot turns into qemu exiting, so a
    // panic ends the run now instead of at the timeout.
    let mut line = String::from("console=ttyS0 panic=-1 quiet");
    if let Some(lsm) = kernel.lsm_param() {
        line.push(' ');
        line.push_str(&lsm);
    }
    if !only.is_empty() {
        line.push_str(&format!(" {}={}", protocol::ONLY_PARAM, only.join(",")));
    }
    // Last, so that they win over ours (the kernel takes the last of a repeated parameter).
    for params in extra {
        line.push(' ');
        line.push_str(params);
    }
    line
}

fn describe_command(vm: &Vm) -> String {
    let command = vm.command();
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_table(report: &Report) {
    const DETAIL_WIDTH: usize = 100;
    let width = report
        .expected
        .iter()
        .map(String::len)
        .chain([8])
        .max()
        .unwrap_or(8);
    eprintln!("{:<width$}  result   guest time  detail", "scenario");
    for name in &report.expected {
        match report.outcomes.iter().find(|o| &o.name == name) {
            Some(o) => {
                let mut detail: String = o.detail.chars().take(DETAIL_WIDTH).collect();
                if o.detail.chars().count() > DETAIL_WIDTH {
                    detail.push('…');
                }
                eprintln!(
                    "{:<width$}  {:<7}  {:>8.2} s  {}",
                    name,
                    if o.passed { "PASS" } else { "FAIL" },
                    o.millis as f64 / 1000.0,
                    detail
                );
            }
            None => eprintln!("{:<width$}  {:<7}  {:>10}  no result", name, "MISSING", "-"),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_have_defaults_and_take_both_value_forms() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.package, kernel::DEFAULT_PACKAGE);
        assert_eq!(o.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS));
        let o = parse(&args(&[
            "--suite=trixie",
            "--timeout",
            "60",
            "--only",
            "mounts,bpf-lsm-loads",
            "-v",
        ]))
        .unwrap();
        assert_eq!(o.suite.as_deref(), Some("trixie"));
        assert_eq!(o.timeout, Duration::from_secs(60));
        assert_eq!(o.only, ["mounts", "bpf-lsm-loads"]);
        assert!(o.verbose);
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [
            &["--timeout", "0"][..],
            &["--timeout"],
            &["--mirror", "http://mirror.invalid/debian"],
            &["--only", "no spaces"],
            &["--frobnicate"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
