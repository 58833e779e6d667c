//! Output scanner throughput, one core: ordinary tool output (logs, code, build output with
//! a handful of secrets), the planted corpus (4 MiB of logs, code and JSON with 600 planted
//! secrets and 500 look-alikes, whose recall and false positives are printed too) and text
//! dense with near-misses (hashes, UUIDs, numbers, URLs, e-mail-like strings, key-like names
//! with low-entropy values). Target (issue 21): at least 1 GB/s on ordinary text.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use secops_daemon::scan::{corpus, Scanner};

const TARGET: usize = 4 << 20;

/// A small deterministic generator so that the text is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[(self.next() % 16) as usize]))
            .collect()
    }
}

const ORDINARY: &[&str] = &[
    "2026-11-22T03:54:15.123Z INFO  server::http: GET /api/v1/items?page=2 200 12ms",
    "2026-11-22T03:54:15.456Z WARN  worker::queue: retrying job 48213 after timeout (attempt 2/5)",
    "   Compiling serde_json v1.0.133",
    "error[E0308]: mismatched types --> src/main.rs:42:17",
    "    let config = Config::from_env().context(\"reading configuration\")?;",
    "    fn handle(&self, req: Request<Body>) -> Result<Response<Body>, Error> {",
    "        for (i, item) in items.iter().enumerate() { total += item.price * item.qty; }",
    "def parse_args(argv):  # returns a namespace with the options the user passed",
    "    return {\"name\": name, \"count\": len(values), \"ok\": True}",
    "test engine::tests::deny_overrides ... ok",
    "drwxr-xr-x  5 coder coder  4096 Nov 22 03:50 src",
    "-rw-r--r--  1 coder coder 18234 Nov 22 03:51 Cargo.lock",
    "The quick brown fox jumps over the lazy dog while the build finishes in the background.",
    "Fetched 1,204 kB in 2s (602 kB/s); Reading package lists... Done",
    "<div class=\"card\"><span>Total</span><b>3 items</b></div>",
    "SELECT id, name, created_at FROM users WHERE active = true ORDER BY created_at DESC LIMIT 50;",
    "    at com.example.service.Handler.process(Handler.java:118)",
    "npm WARN deprecated inflight@1.0.6: This module is not supported",
    "remote: Counting objects: 100% (35/35), done.",
    "    self.session = requests.Session()",
];

const SECRETS: &[&str] = &[
    "export AWS_ACCESS_KEY_ID=AKIA4QJ7ZP2XK9LM3NVB",
    "GITHUB_TOKEN=ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5",
    "DATABASE_URL=postgres://app:Zq81mVx0Lr4@db.internal.corp:5432/app",
    "Author: Dana Whitfield <dana.whitfield@corpmail.io>",
    "api_key = \"q8Vz3kLm0PxR7tYw2NbCq8Vz3kLm\"",
];

fn ordinary_text() -> String {
    let mut rng = Lcg(1);
    let mut s = String::with_capacity(TARGET + 256);
    let mut lines = 0u64;
    while s.len() < TARGET {
        lines += 1;
        // About one secret per 10,000 lines: "a handful" in a few MB.
        if lines.is_multiple_of(10_000) {
            s.push_str(rng.pick(SECRETS));
        } else {
            s.push_str(rng.pick(ORDINARY));
        }
        s.push('\n');
    }
    s
}

fn near_miss_text() -> String {
    let mut rng = Lcg(2);
    let mut s = String::with_capacity(TARGET + 256);
    while s.len() < TARGET {
        let line = match rng.next() % 10 {
            0 => format!("commit {}", rng.hex(40)),
            1 => format!(
                "request_id={}-{}-{}-{}-{}",
                rng.hex(8),
                rng.hex(4),
                rng.hex(4),
                rng.hex(4),
                rng.hex(12)
            ),
            2 => format!(
                "sha256:{} order={}",
                rng.hex(64),
                rng.next() % 1_000_000_000_000
            ),
            3 => format!("ts={}{} user@localhost", 1_763_700_000u64, rng.next()),
            4 => "password = ${DB_PASSWORD}  token: self.token_value".to_owned(),
            5 => "https://docs.rs/regex/1.0 and postgres://user:password@localhost/db".to_owned(),
            6 => "card 4556 7375 8689 9856 and 4242 4242 4242 4242".to_owned(),
            7 => "icon@2x.png jane@example.com git@github.com:org/repo.git".to_owned(),
            8 => format!(
                "eyJhbGciOiJIUzI1NiJ9 authorization header missing {}",
                rng.hex(12)
            ),
            _ => "ASIAN markets AKIABC sk_test_helper auth_mode=basic".to_owned(),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

fn bench(c: &mut Criterion) {
    let scanner = Scanner::new();
    let mut group = c.benchmark_group("scan");
    group.sample_size(20);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(5));
    let planted = corpus::generate(21, TARGET, 600, 500);
    let score = planted.score(&scanner.scan(&planted.text));
    eprintln!(
        "planted corpus: recall {}/{}, {} false positives",
        score.found,
        score.planted,
        score.false_positives.len()
    );
    for (name, text) in [
        ("ordinary", ordinary_text()),
        ("planted", planted.text.clone()),
        ("near_misses", near_miss_text()),
    ] {
        let found = scanner.scan(&text).len();
        eprintln!("{name}: {} bytes, {found} findings", text.len());
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| scanner.scan(black_box(&text))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
