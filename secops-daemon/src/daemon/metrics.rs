//! Prometheus metrics: what the daemon decided, how fast, what the kernel lost, what waits
//! for a human, and what the output scanner found. Served at `/metrics` on the API socket
//! (admins only) and, if configured, on a loopback TCP port.
//!
//! Label values come only from bounded sets: verdicts, the policy's action types (a request
//! with an unknown type is refused before it is counted), the policy's agents, the scanner's
//! categories, HTTP status codes. A caller cannot grow the label space.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use secops_common::Verdict;

use crate::audit::Source;
use crate::scan::{Applied, Category};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    source: &'static str,
    verdict: &'static str,
    action: String,
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabel {
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabels {
    agent: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

fn applied_name(applied: Applied) -> &'static str {
    match applied {
        Applied::Clean => "clean",
        Applied::Redacted => "redacted",
        Applied::Withheld => "withheld",
        Applied::LoggedOnly => "logged-only",
    }
}

/// Values other parts of the daemon keep, copied in when the metrics are read.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub(crate) events_received: u64,
    pub(crate) events_lost: u64,
    /// `None` when the queue could not be read: the gauge keeps its last value.
    pub(crate) open_tickets: Option<u64>,
}

pub(crate) struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    latency: Family<SourceLabel, Histogram>,
    findings: Family<CategoryLabel, Counter>,
    redacted: Family<CategoryLabel, Counter>,
    scans: Family<ScanLabels, Counter>,
    api_responses: Family<StatusLabel, Counter>,
    events_received: Counter,
    events_lost: Counter,
    open_tickets: Gauge,
    /// Serializes reads: copying the snapshot in and encoding must not interleave.
    encode_lock: Mutex<()>,
}

fn latency_histogram() -> Histogram {
    // 1 µs to about 1 s, doubling: engine decisions sit at the bottom, API round trips with
    // a durable audit commit near the top.
    Histogram::new(exponential_buckets(1e-6, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("secops");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let latency =
            Family::<SourceLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let findings = Family::<CategoryLabel, Counter>::default();
        let redacted = Family::<CategoryLabel, Counter>::default();
        let scans = Family::<ScanLabels, Counter>::default();
        let api_responses = Family::<StatusLabel, Counter>::default();
        let events_received = Counter::default();
        let events_lost = Counter::default();
        let open_tickets = Gauge::default();
        registry.register(
            "decisions",
            "Decisions made, by source (kernel, api, parked, approval, dns), verdict, action type and agent",
            decisions.clone(),
        );
        registry.register(
            "decision_latency_seconds",
            "Time to decide one action with the engine (api: the whole /v1/check handler)",
            latency.clone(),
        );
        registry.register(
            "scan_findings",
            "Sensitive items the output scanner found, by category",
            findings.clone(),
        );
        registry.register(
            "audit_redactions",
            "Sensitive items redacted out of audit records (argv, paths, tool arguments) before they were stored, by category",
            redacted.clone(),
        );
        registry.register(
            "scans",
            "Tool outputs scanned, by agent and what was done with them",
            scans.clone(),
        );
        registry.register(
            "api_responses",
            "API responses by HTTP status",
            api_responses.clone(),
        );
        registry.register(
            "kernel_events_received",
            "Events read from the kernel ring buffer",
            events_received.clone(),
        );
        registry.register(
            "kernel_events_lost",
            "Events the kernel could not put in the ring buffer (each loss is also audited)",
            events_lost.clone(),
        );
        registry.register(
            "approval_tickets_open",
            "Approval tickets waiting for a human",
            open_tickets.clone(),
        );
        Metrics {
            registry,
            decisions,
            latency,
            findings,
            redacted,
            scans,
            api_responses,
            events_received,
            events_lost,
            open_tickets,
            encode_lock: Mutex::new(()),
        }
    }

    pub(crate) fn decision(&self, source: Source, verdict: Verdict, action: &str, agent: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                source: source.as_str(),
                verdict: verdict.as_str(),
                action: action.to_owned(),
                agent: agent.to_owned(),
            })
            .inc();
    }

    pub(crate) fn latency(&self, source: Source, took: Duration) {
        self.latency
            .get_or_create(&SourceLabel {
                source: source.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn scanned(
        &self,
        agent: &str,
        applied: Applied,
        findings: &std::collections::BTreeMap<Category, usize>,
    ) {
        self.scans
            .get_or_create(&ScanLabels {
                agent: agent.to_owned(),
                outcome: applied_name(applied),
            })
            .inc();
        for (category, &n) in findings {
            self.findings
                .get_or_create(&CategoryLabel {
                    category: category.as_str(),
                })
                .inc_by(n as u64);
        }
    }

    /// Findings redacted out of audit records before they were stored.
    pub(crate) fn redacted(&self, findings: &std::collections::BTreeMap<Category, usize>) {
        for (category, &n) in findings {
            self.redacted
                .get_or_create(&CategoryLabel {
                    category: category.as_str(),
                })
                .inc_by(n as u64);
        }
    }

    pub(crate) fn api_response(&self, status: u16) {
        self.api_responses
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// The text exposition format, with the snapshot's values brought up to date.
    pub(crate) fn encode(&self, snapshot: &Snapshot) -> String {
        let _guard = super::locks::lock(&self.encode_lock);
        catch_up(&self.events_received, snapshot.events_received);
        catch_up(&self.events_lost, snapshot.events_lost);
        if let Some(n) = snapshot.open_tickets {
            self.open_tickets.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Counters only go up: raise `counter` to `value` (kept elsewhere) if it is behind.
fn catch_up(counter: &Counter<u64, AtomicU64>, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}
