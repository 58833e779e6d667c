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

/// One boot runs every scenario; on a loaded shared host `daemon-starts` alone took ~100 s
/// and `lsm-attacks` (with two reloads in its moved-tree part) 55-75 s, past the old 240 s.
const DEFAULT_TIMEOUT_SECS: u64 = 420;
/// With `--icount` (the benchmark): one vCPU and instruction-counted time. The overhead
/// bench on 5.10 starts a daemon per round (26 LSM programs verified each time): 400 s.
const ICOUNT_TIMEOUT_SECS: u64 = 900;

/// The suites `--all-kernels` boots, oldest first: Debian 11, 12, 13 and the development
/// suite, each with its newest cloud kernel.
pub const ALL_SUITES: &[&str] = &["bullseye", "bookworm", "trixie", "sid"];

pub const USAGE: &str = "\
usage: cargo xtask vm-test [--all-kernels | [--kernel-package NAME[=VERSION]] [--suite SUITE [--mirror URI]]]
                           [--timeout SECS] [--only SCENARIO[,SCENARIO...]] [--append PARAMS]
                           [--icount SHIFT] [--verbose]
  --all-kernels     every scenario on the newest cloud kernel of each of bullseye, bookworm, trixie
                    and sid (kernels fetched in parallel, one build); a failure names kernel and
                    scenario
  --kernel-package  a Debian linux-image-* package or metapackage (default linux-image-cloud-amd64),
                    =VERSION for that version instead of the newest
  --suite           look the package up in another Debian suite (bullseye, trixie, sid, ...) through a
                    private sources list under <target>/vm/apt/SUITE/ (with SUITE-updates and
                    SUITE-security, refreshed when older than an hour); the host's apt is untouched
  --mirror          the Debian mirror for --suite (default: the one the host's apt sources use,
                    and its security mirror)
  --timeout         seconds before qemu is killed and the run fails (default 420; 900 with
                    --icount)
  --only            run only these scenarios (`secops-vm-runner --list` names them)
  --append          extra kernel parameters (e.g. `loglevel=7`, or an `lsm=` list to try)
  --icount          guest time counts instructions: each takes 2^SHIFT ns (qemu -icount
                    shift=SHIFT,sleep=off), so timings inside the guest are repeatable whatever
                    the host does; one vCPU (the second does not come up under -icount). For
                    benchmarks: `--only lsm-overhead --icount 3`
  --verbose         copy the guest console to stderr as it runs";

struct Options {
    package: kernel::Request,
    /// Set: each of these suites in turn (`--all-kernels`); else `suite` alone.
    all_suites: bool,
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
        package: kernel::Request::default_package(),
        all_suites: false,
        suite: None,
        mirror: None,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        only: Vec::new(),
        append: Vec::new(),
        icount: None,
        verbose: false,
    };
    let mut timeout = None;
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
            "--kernel-package" => o.package = kernel::Request::parse(&value()?)?,
            "--all-kernels" => o.all_suites = true,
            "--suite" => o.suite = Some(value()?),
            "--mirror" => o.mirror = Some(value()?),
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v.parse().ok().filter(|s| *s > 0).with_context(|| {
                    format!("--timeout {v:?} is not a positive number of seconds")
                })?;
                timeout = Some(Duration::from_secs(secs));
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
    o.timeout = timeout.unwrap_or(Duration::from_secs(if o.icount.is_some() {
        ICOUNT_TIMEOUT_SECS
    } else {
        DEFAULT_TIMEOUT_SECS
    }));
    if o.mirror.is_some() && o.suite.is_none() {
        bail!("--mirror goes with --suite");
    }
    if o.all_suites && (o.suite.is_some() || o.package != kernel::Request::default_package()) {
        bail!("--all-kernels picks the kernels itself: no --suite or --kernel-package with it");
    }
    if let Some(bad) = o.only.iter().find(|n| !protocol::valid_name(n)) {
        bail!("--only {bad:?}: scenario names are letters, digits, - and _");
    }
    Ok(o)
}

/// One kernel to boot: which suite's (None: the host's apt sources) and the kernel itself.
struct Target {
    suite: Option<String>,
    kernel: Kernel,
}

impl Target {
    /// How a result line names this kernel: its release, and the suite it came from.
    fn label(&self) -> String {
        match &self.suite {
            Some(suite) => format!("{} ({suite})", self.kernel.release),
            None => self.kernel.release.clone(),
        }
    }

    /// The console log of this kernel's run.
    fn log(&self, vm_dir: &Path) -> PathBuf {
        match &self.suite {
            Some(suite) => vm_dir.join(format!("last-console-{suite}.log")),
            None => vm_dir.join("last-console.log"),
        }
    }
}

pub fn vm_test(args: &[String], target: &Path, is_root: bool) -> Result<()> {
    let options = parse(args)?;
    let started = Instant::now();
    let vm_dir = target.join("vm");
    std::fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;

    let step = Instant::now();
    let suites: Vec<Option<String>> = if options.all_suites {
        ALL_SUITES.iter().map(|s| Some((*s).to_owned())).collect()
    } else {
        vec![options.suite.clone()]
    };
    let targets = fetch_kernels(&options, &suites, &vm_dir, is_root)?;
    let kernel_time = step.elapsed();

    let step = Instant::now();
    let binaries = build_binaries(target)?;
    let build_time = step.elapsed();

    let step = Instant::now();
    let image = build_image(&binaries, &vm_dir)?;
    let image_time = step.elapsed();
    eprintln!(
        "vm-test: kernel fetch {} | cargo build {} | initramfs {}",
        secs(kernel_time),
        secs(build_time),
        secs(image_time),
    );

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    let mut boots: Vec<(&Target, Option<String>)> = targets.iter().map(|t| (t, None)).collect();
    // The default run also boots the newest kernel once more with `bpf` left out of `lsm=`:
    // the daemon must then run degraded, and say so (scenario degraded-lsm).
    if options.only.is_empty() {
        if let Some(t) = targets.last() {
            match t.kernel.lsm_param_without_bpf() {
                Some(lsm) => boots.push((t, Some(lsm))),
                None => failures.push((
                    t.label(),
                    format!(
                        "scenario {}: the kernel's config names no CONFIG_LSM to leave bpf out of",
                        protocol::DEGRADED_LSM
                    ),
                )),
            }
        }
    }
    for (t, without_bpf) in &boots {
        let boot = match without_bpf {
            None => Boot {
                label: t.label(),
                only: options.only.clone(),
                append: options.append.clone(),
                log: t.log(&vm_dir),
            },
            Some(lsm) => Boot {
                label: format!("{} with {lsm}", t.label()),
                only: vec![protocol::DEGRADED_LSM.to_owned()],
                append: options
                    .append
                    .iter()
                    .cloned()
                    .chain([lsm.clone()])
                    .collect(),
                log: t.log(&vm_dir).with_extension("no-bpf-lsm.log"),
            },
        };
        let outcome = boot_and_judge(t, &boot, &image, &options)?;
        summary.push(format!(
            "{}: {} passed, {} failed",
            boot.label, outcome.passed, outcome.failed
        ));
        failures.extend(outcome.failures);
    }
    let passed: usize = boots.len()
        - failures
            .iter()
            .map(|(k, _)| k)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
    if targets.len() > 1 {
        eprintln!("vm-test: per kernel:");
        for line in &summary {
            eprintln!("  {line}");
        }
    }
    eprintln!(
        "vm-test: {} boot(s) of {} kernel(s), {passed} passed, {} failed; total {}",
        boots.len(),
        targets.len(),
        boots.len() - passed,
        secs(started.elapsed())
    );
    if failures.is_empty() {
        return Ok(());
    }
    for (kernel, what) in &failures {
        eprintln!("vm-test: FAILED on {kernel}: {what}");
    }
    bail!(
        "vm-test failed on {} of {} boot(s): {}",
        boots.len() - passed,
        boots.len(),
        failures
            .iter()
            .map(|(kernel, what)| format!("{kernel}: {what}"))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

/// What one kernel's boot gave: counts, and each failure (a scenario, or a problem of the
/// run) with the kernel's label.
struct KernelOutcome {
    passed: usize,
    failed: usize,
    failures: Vec<(String, String)>,
}

/// One boot of a kernel: what it is called in results, which scenarios, what is added to
/// the kernel command line, where the console log goes.
struct Boot {
    label: String,
    only: Vec<String>,
    append: Vec<String>,
    log: PathBuf,
}

fn boot_and_judge(
    t: &Target,
    boot_spec: &Boot,
    image: &initramfs::Built,
    options: &Options,
) -> Result<KernelOutcome> {
    let vm = Vm {
        kernel: t.kernel.vmlinuz.clone(),
        initrd: image.path.clone(),
        append: kernel_command_line(&t.kernel, &boot_spec.only, &boot_spec.append),
        memory_mib: 1024,
        cpus: if options.icount.is_some() { 1 } else { 2 },
        icount: options.icount,
        timeout: options.timeout,
        log: boot_spec.log.clone(),
        echo: options.verbose,
    };
    eprintln!(
        "xtask: booting {}: {}",
        boot_spec.label.clone(),
        describe_command(&vm)
    );
    let boot = vm.boot()?;
    let report = results::evaluate(&boot.console, boot.timed_out, options.timeout.as_secs());

    print_table(&report);
    eprintln!(
        "vm-test: kernel {} | boot to results {} | qemu {}",
        boot_spec.label.clone(),
        boot.results_after.map(secs).unwrap_or_else(|| "-".into()),
        secs(boot.elapsed),
    );
    if let Some(status) = boot.exit.filter(|s| !s.success()) {
        eprintln!("xtask: qemu exited with {status}");
    }
    let (passed, failed) = report.counts();
    eprintln!(
        "vm-test: {}: {passed} passed, {failed} failed",
        boot_spec.label.clone()
    );
    let mut failures: Vec<(String, String)> = report
        .failed_scenarios()
        .into_iter()
        .map(|name| (boot_spec.label.clone(), format!("scenario {name}")))
        .chain(
            report
                .problems
                .iter()
                .map(|p| (boot_spec.label.clone(), p.clone())),
        )
        .collect();
    if !report.passed() && failures.is_empty() {
        failures.push((boot_spec.label.clone(), "the run failed".into()));
    }
    if !failures.is_empty() {
        eprintln!(
            "--- {}: last 40 console lines ({}) ---\n{}\n---",
            boot_spec.label.clone(),
            vm.log.display(),
            qemu::tail(&boot.console, 40)
        );
        for problem in &report.problems {
            eprintln!("vm-test: {}: {problem}", boot_spec.label.clone());
        }
    }
    Ok(KernelOutcome {
        passed,
        failed,
        failures,
    })
}

/// Each suite's kernel, fetched in parallel (package lists and downloads are network-bound).
fn fetch_kernels(
    options: &Options,
    suites: &[Option<String>],
    vm_dir: &Path,
    is_root: bool,
) -> Result<Vec<Target>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = suites
            .iter()
            .map(|suite| {
                scope.spawn(move || {
                    fetch_kernel(options, suite.as_deref(), vm_dir, is_root)
                        .map(|kernel| Target {
                            suite: suite.clone(),
                            kernel,
                        })
                        .with_context(|| match suite {
                            Some(suite) => format!("fetching the {suite} kernel"),
                            None => "fetching the kernel".to_owned(),
                        })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a kernel fetch thread panicked"))?
            })
            .collect()
    })
}

fn fetch_kernel(
    options: &Options,
    suite: Option<&str>,
    vm_dir: &Path,
    is_root: bool,
) -> Result<Kernel> {
    let apt = match suite {
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
        "xtask: kernel {}{} ({} {}, {}); {}",
        kernel.release,
        suite.map(|s| format!(" from {s}")).unwrap_or_default(),
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
        eprintln!(
            "xtask: warning: {}: {missing}; scenarios that need it will fail",
            kernel.release
        );
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
        assert_eq!(o.package, kernel::Request::default_package());
        assert!(!o.all_suites);
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
        let bench = parse(&args(&["--icount", "3"])).unwrap();
        assert_eq!(bench.timeout, Duration::from_secs(ICOUNT_TIMEOUT_SECS));
        let bench = parse(&args(&["--icount", "3", "--timeout", "60"])).unwrap();
        assert_eq!(bench.timeout, Duration::from_secs(60));
        assert!(o.verbose);
        let o = parse(&args(&[
            "--kernel-package=linux-image-cloud-amd64=6.1.192-3",
        ]))
        .unwrap();
        assert_eq!(o.package.version.as_deref(), Some("6.1.192-3"));
        assert!(
            parse(&args(&["--all-kernels", "--only", "daemon-starts"]))
                .unwrap()
                .all_suites
        );
    }

    #[test]
    fn bad_options_are_errors() {
        for bad in [
            &["--timeout", "0"][..],
            &["--timeout"],
            &["--mirror", "http://mirror.invalid/debian"],
            &["--only", "no spaces"],
            &["--frobnicate"],
            &["--all-kernels", "--suite", "sid"],
            &["--all-kernels", "--kernel-package", "linux-image-amd64"],
            &["--kernel-package", "linux image"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
