//! `/v1/check` round trip over the daemon's Unix socket (issue 6), from one run: an agent
//! started with `secops run` sends checks at a fixed 1,000 requests/s on one kept-alive
//! connection to a real daemon, and the probe reports latency percentiles. Target: p99 below
//! 200 µs. Also the same load with `durable: true` (answered after the audit commit), for
//! comparison.
//!
//! The same client also runs, before and after, against the probe's own fixed-answer server
//! (`secops-apiprobe serve`: blocking, no runtime, no decision): the floor this host's
//! scheduler and socket layer impose on any server, so the daemon's own share can be read off
//! as the difference.
//!
//! Last, the floor and `/v1/check` once more with every CPU kept from going idle by a spinning
//! SCHED_IDLE thread (which any other task preempts at once). It isolates what waking an idle
//! CPU costs on this host; it is a diagnosis, not a mode the daemon runs in.
//!
//! Needs root; prints `skipped: ...` otherwise.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use secops_host_tests::daemon::{Binaries, Daemon};
use secops_host_tests::kernel::{need_root, unique_name};

const APIPROBE: &str = env!("CARGO_BIN_EXE_secops-apiprobe");

const RATE: &str = "1000";
const COUNT: &str = "20000";
/// Durable checks wait ~10 ms each for the commit, so the sender cannot keep 1,000/s anyway.
const DURABLE_COUNT: &str = "2000";

const POLICY: &str = "version: 1
agents:
  - name: bench
    workspace: /tmp
    user: root
    autonomy: semi
rules:
  - id: pushes-are-fine
    actions: [vcs:push]
    verdict: allow
    risk: low
";

/// `secops-apiprobe serve` on a socket of its own; stopped by its pid, and its socket
/// removed, on drop.
struct FloorServer {
    child: Child,
    socket: PathBuf,
}

impl FloorServer {
    fn start() -> FloorServer {
        let socket = std::env::temp_dir().join(format!("{}-floor.sock", unique_name()));
        let child = Command::new(APIPROBE)
            .arg("serve")
            .arg(&socket)
            .spawn()
            .unwrap();
        let server = FloorServer { child, socket };
        let started = Instant::now();
        while UnixStream::connect(&server.socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the floor server did not listen on {}",
                server.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One spinning SCHED_IDLE thread on each CPU this process may use, so no CPU ever idles
/// (halts) while it lives; stopped and joined on drop.
struct CpusKeptBusy {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CpusKeptBusy {
    /// Fails (with every spinner already stopped) if a thread cannot be pinned or made
    /// SCHED_IDLE: a spinner at normal priority would compete with what is measured.
    fn start() -> Result<CpusKeptBusy, String> {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this process.
        let allowed = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(format!(
                    "sched_getaffinity: {}",
                    std::io::Error::last_os_error()
                ));
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect::<Vec<_>>()
        };
        let (ready, setups) = std::sync::mpsc::channel();
        let mut busy = CpusKeptBusy {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for &cpu in &allowed {
            let stop = busy.stop.clone();
            let ready = ready.clone();
            busy.threads.push(std::thread::spawn(move || {
                let setup = pin_as_idle(cpu);
                let ok = setup.is_ok();
                let _ = ready.send(setup);
                while ok && !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            }));
        }
        for _ in &allowed {
            setups
                .recv()
                .map_err(|_| "a spinner thread died".to_owned())??;
        }
        Ok(busy)
    }
}

impl Drop for CpusKeptBusy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Pins the calling thread to `cpu` and gives it the SCHED_IDLE policy.
fn pin_as_idle(cpu: usize) -> Result<(), String> {
    // SAFETY: plain syscalls on the calling thread with initialised arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning a spinner to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            return Err(format!(
                "SCHED_IDLE for the spinner on CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Runs the probe's fixed-rate client and prints its percentiles; returns its p99 (µs).
fn run(
    daemon: &Daemon,
    label: &str,
    socket: &Path,
    count: &str,
    body: &str,
    get_path: &str,
) -> f64 {
    let percentiles = daemon.api_probe(
        Path::new(APIPROBE),
        "bench",
        "rate",
        socket,
        &[RATE, count, body, get_path],
    );
    println!("{label:<44} {RATE} req/s x {count}: {percentiles} (µs)");
    percentiles
        .split_whitespace()
        .skip_while(|w| *w != "p99")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Issue 21's target: `/v1/check` p99 at most 1.3x the fixed-answer server's, same run. The
/// floor is measured before and after the checks; the ratio is given against both.
fn print_ratio(label: &str, check_p99: f64, floor_p99: &[f64]) {
    let ratios: Vec<String> = floor_p99
        .iter()
        .map(|f| format!("{:.2}x", check_p99 / f))
        .collect();
    println!(
        "{label:<44} p99 ratio to the floor: {} (target <= 1.3x)",
        ratios.join(" / ")
    );
}

fn main() {
    if !need_root("api bench") {
        return;
    }
    let daemon = Daemon::start(
        &Binaries {
            secops: env!("CARGO_BIN_EXE_secops-under-test").into(),
            probe: env!("CARGO_BIN_EXE_secops-netprobe").into(),
        },
        POLICY,
    );
    let check = r#"{"action":"vcs:push","object":{"host":"github.com","port":443},"tool":"git","arguments":"git push origin main"}"#;
    let durable =
        r#"{"action":"vcs:push","object":{"host":"github.com","port":443},"durable":true}"#;
    let floor = FloorServer::start();
    let socket = daemon.socket();
    let floor_label = "floor: fixed-answer blocking server";
    let floor_before = run(&daemon, floor_label, &floor.socket, COUNT, "", "/floor");
    run(
        &daemon,
        "/v1/whoami (HTTP on the socket, no decision)",
        &socket,
        COUNT,
        "",
        "/v1/whoami",
    );
    let check_p99 = run(
        &daemon,
        "/v1/check (answered once queued for audit)",
        &socket,
        COUNT,
        check,
        "",
    );
    let floor_after = run(&daemon, floor_label, &floor.socket, COUNT, "", "/floor");
    print_ratio("/v1/check", check_p99, &[floor_before, floor_after]);
    print_handler_latency(&daemon);
    run(
        &daemon,
        "/v1/check durable (after the audit commit)",
        &socket,
        DURABLE_COUNT,
        durable,
        "",
    );
    let busy = match CpusKeptBusy::start() {
        Ok(busy) => busy,
        Err(e) => {
            println!("the runs with no CPU idle were not made: {e}");
            return;
        }
    };
    let busy_floor = "floor, no CPU idle (SCHED_IDLE spinners)";
    let busy_floor_p99 = run(&daemon, busy_floor, &floor.socket, COUNT, "", "/floor");
    let busy_check_p99 = run(
        &daemon,
        "/v1/check, no CPU idle (SCHED_IDLE spinners)",
        &socket,
        COUNT,
        check,
        "",
    );
    print_ratio("/v1/check, no CPU idle", busy_check_p99, &[busy_floor_p99]);
    drop(busy);
}

/// The daemon's own view of the checks so far: `secops_decision_latency_seconds{source="api"}`,
/// the time inside the /v1/check handler (engine, tickets, audit queue), read from /metrics as
/// bucket upper bounds. The rest of a round trip is the socket and the scheduler.
fn print_handler_latency(daemon: &Daemon) {
    let text = match daemon.admin_client().get_text("/metrics") {
        Ok((_, text)) => text,
        Err(e) => {
            println!("handler time: /metrics: {e}");
            return;
        }
    };
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("secops_decision_latency_seconds_bucket{") && l.contains("source=\"api\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count = l.rsplit(' ').next()?.parse().ok()?;
            Some((le.parse().unwrap_or(f64::INFINITY), count))
        })
        .collect();
    let total = buckets.last().map_or(0, |b| b.1);
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c as f64 >= q * total as f64)
            .map_or(f64::NAN, |(le, _)| le * 1e6)
    };
    println!(
        "{:<44} {total} checks: p50 <= {:.0}, p99 <= {:.0}, p99.9 <= {:.0} (µs, histogram buckets)",
        "  of which inside the /v1/check handler",
        at(0.5),
        at(0.99),
        at(0.999)
    );
}
