//! The engine at fleet scale, one run (`cargo bench -p secops-daemon --bench engine`):
//!
//! - criterion, per request shape, on the 1,000-rule policy;
//! - single timed decisions, median and tail: the 8 shapes mixed, and random requests (every
//!   rule shape, every agent, about half hitting a rule) at 1,000 and 10,000 rules;
//! - compiling: time, and heap the engine holds (a counting allocator), for 1,000 rules ×
//!   8/64/512 agents and 10,000/50,000 rules × 8 agents;
//! - decisions while another thread compiles and swaps in a new engine, as a reload does.
//!
//! Targets (issue 21): random requests median < 1 µs and p99 < 5 µs at 1,000 rules, p99 < 20
//! µs at 10,000; compile 1,000 × 512 < 1 s and < 100 MiB, 10,000 × 8 < 1 s.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use secops_daemon::engine::synthetic::{self, Request};
use secops_daemon::engine::{ActionRequest, Engine};
use secops_daemon::policy::{parse_policy_str, Policy};

/// Counts the bytes on the heap, so that what an engine holds can be told apart from what the
/// allocator keeps around.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now =
                LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: f64 = 1024.0 * 1024.0;

fn parse(rules: usize, agents: usize) -> Policy {
    parse_policy_str(Path::new("bench.yaml"), &synthetic::policy(rules, agents))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn requests<'a>(engine: &Engine, requests: &'a [Request]) -> Vec<ActionRequest<'a>> {
    requests
        .iter()
        .map(|r| {
            r.for_engine(engine)
                .expect("every action type is a core type")
        })
        .collect()
}

fn decisions(c: &mut Criterion) {
    let engine = Engine::new(Arc::new(parse(1000, 8)));
    let shapes = synthetic::shaped_requests();
    let mut group = c.benchmark_group("decide_1000_rules");
    for shape in &shapes {
        let req = shape.for_engine(&engine).expect("core action");
        group.bench_function(&shape.name, |b| {
            b.iter(|| black_box(engine.decide(black_box(&req))))
        });
    }
    group.finish();
}

struct Distribution(Vec<Duration>);

impl Distribution {
    fn pct(&self, p: f64) -> Duration {
        self.0[((self.0.len() as f64 * p) as usize).min(self.0.len() - 1)]
    }
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
            self.pct(0.50),
            self.pct(0.99),
            self.pct(0.999),
            self.0[self.0.len() - 1]
        )
    }
}

/// Times each decision of `requests` (cycled to `count`) on its own, after one pass of warm-up.
fn time_each(engine: &Engine, requests: &[ActionRequest<'_>], count: usize) -> Distribution {
    for r in requests.iter().take(count) {
        black_box(engine.decide(r));
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(count);
    for r in requests.iter().cycle().take(count) {
        let start = Instant::now();
        black_box(engine.decide(black_box(r)));
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    Distribution(samples)
}

fn latency() {
    let engine = Engine::new(Arc::new(parse(1000, 8)));
    let shapes = synthetic::shaped_requests();
    let shaped = requests(&engine, &shapes);
    println!(
        "decision, 1,000 rules, the {} shapes mixed, 200,000 timed: {}",
        shaped.len(),
        time_each(&engine, &shaped, 200_000)
    );
    for rules in [1000, 10_000] {
        let engine = Engine::new(Arc::new(parse(rules, 8)));
        let random = synthetic::random_requests(rules, 8, 100_000, 21);
        let reqs = requests(&engine, &random);
        let target = if rules == 1000 {
            "targets: median < 1µs, p99 < 5µs"
        } else {
            "target: p99 < 20µs"
        };
        println!(
            "decision, {rules} rules, 100,000 random requests over 8 agents, each timed once: {} ({target})",
            time_each(&engine, &reqs, reqs.len())
        );
    }
}

fn compiling() {
    for (rules, agents) in [(1000, 8), (1000, 64), (1000, 512), (10_000, 8), (50_000, 8)] {
        let source = synthetic::policy(rules, agents);
        let start_bytes = LIVE.load(Ordering::Relaxed);
        PEAK.store(start_bytes, Ordering::Relaxed);
        let started = Instant::now();
        let policy =
            parse_policy_str(Path::new("bench.yaml"), &source).unwrap_or_else(|e| panic!("{e}"));
        let parsed = started.elapsed();
        let policy = Arc::new(policy);
        let parse_peak = PEAK.load(Ordering::Relaxed) - start_bytes;
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let started = Instant::now();
        let engine = Engine::new(policy.clone());
        let compiled = started.elapsed();
        let held = LIVE.load(Ordering::Relaxed) - before;
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let total = LIVE.load(Ordering::Relaxed) - start_bytes;
        println!(
            "compile, {rules} rules × {agents} agents: {:?} (parse {parsed:?} + engine {compiled:?}); policy + engine hold {:.1} MiB, the engine {:.1} MiB (peak {:.1} MiB parsing, {:.1} MiB compiling)",
            parsed + compiled,
            total as f64 / MIB,
            held as f64 / MIB,
            parse_peak as f64 / MIB,
            peak as f64 / MIB,
        );
        drop(engine);
    }
}

/// Decisions on one thread while another compiles a new engine and swaps it in, as the
/// daemon's reload does (`RwLock<Arc<Engine>>`); the old engine is dropped by the reloader.
fn during_reload() {
    let policy = Arc::new(parse(1000, 8));
    let live = Arc::new(RwLock::new(Arc::new(Engine::new(policy.clone()))));
    let random = synthetic::random_requests(1000, 8, 50_000, 22);
    let measure = |live: &RwLock<Arc<Engine>>| {
        let mut samples = Vec::with_capacity(random.len());
        for r in &random {
            let start = Instant::now();
            let engine = live.read().expect("lock").clone();
            let request = r.for_engine(&engine).expect("core action");
            black_box(engine.decide(&request));
            drop(engine);
            samples.push(start.elapsed());
        }
        samples.sort_unstable();
        Distribution(samples)
    };
    let quiet = measure(&live);
    let stop = Arc::new(AtomicBool::new(false));
    let reloads = {
        let (live, stop, policy) = (live.clone(), stop.clone(), policy.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let fresh = Arc::new(Engine::new(policy.clone()));
                let old = std::mem::replace(&mut *live.write().expect("lock"), fresh);
                drop(old);
                n += 1;
            }
            n
        })
    };
    let busy = measure(&live);
    stop.store(true, Ordering::Relaxed);
    let n = reloads.join().expect("reload thread");
    println!(
        "decision, 1,000 rules, random requests, engine from RwLock<Arc<Engine>>: quiet {quiet}"
    );
    println!("  the same while another thread reloaded {n} times: {busy}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = decisions
}

fn main() {
    benches();
    latency();
    compiling();
    during_reload();
    Criterion::default().configure_from_args().final_summary();
}
