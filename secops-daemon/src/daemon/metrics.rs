//! Prometheus metrics: what the daemon decided, how fast, what the kernel lost, what waits
//! for a human and what became of it, what the output scanner found, which layers are
//! active, and what people (and automatic lowering) did to agents. Served at `/metrics` on
//! the API socket (admins only) and, if configured, on a loopback TCP port, as OpenMetrics
//! to a scraper that asks for it and as Prometheus text 0.0.4 otherwise.
//!
//! Label values come only from bounded sets: verdicts, the policy's action types (a request
//! with an unknown type is refused before it is counted), the policy's agents, the scanner's
//! categories, HTTP status codes, the daemon's layers. A caller cannot grow the label space.
//! Families read when scraped (layers, agents, tickets by state) are rebuilt at each scrape,
//! so an agent gone from the policy is gone from them.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use secops_common::{AutonomyLevel, Verdict};

use crate::approvals::TicketStatus;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LayerLabel {
    layer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLevelLabels {
    agent: String,
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KillSwitchLabels {
    agent: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AutonomyChangeLabels {
    agent: String,
    /// `person` or `automatic`.
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TicketDecisionLabels {
    decision: &'static str,
    /// `person` or `timeout`.
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessLabel {
    witness: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceOnly {
    source: &'static str,
}

fn applied_name(applied: Applied) -> &'static str {
    match applied {
        Applied::Clean => "clean",
        Applied::Redacted => "redacted",
        Applied::Withheld => "withheld",
        Applied::LoggedOnly => "logged-only",
    }
}

/// One agent as the scrape sees it.
pub(crate) struct AgentSnapshot {
    pub(crate) name: String,
    pub(crate) autonomy: AutonomyLevel,
    pub(crate) frozen: bool,
    pub(crate) processes: usize,
}

/// Values other parts of the daemon keep, copied in when the metrics are read.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub(crate) events_received: u64,
    pub(crate) events_lost: u64,
    /// Tickets in the queue by status; `None` when the queue could not be read: the gauges
    /// keep their last values.
    pub(crate) tickets: Option<Vec<(TicketStatus, u64)>>,
    /// Each layer's name and whether it is active.
    pub(crate) layers: Vec<(String, bool)>,
    pub(crate) agents: Vec<AgentSnapshot>,
    /// Webhook notifications by result (delivered, retried, failed, dropped).
    pub(crate) notifications: Vec<(&'static str, u64)>,
    /// The DNS layer's counts; `None` when they could not be read (the series keep their
    /// last values).
    pub(crate) dns: Option<crate::api::DnsStatus>,
    /// The audit writer's health; `None`: the series keep their last values.
    pub(crate) audit: Option<crate::api::AuditLogStatus>,
    /// The kernel's counted denials against the log's account of them.
    pub(crate) kernel_denials: Option<crate::api::KernelDenials>,
}

/// How `/metrics` is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exposition {
    /// `text/plain; version=0.0.4`, what Prometheus and promtool read by default.
    PrometheusText,
    /// `application/openmetrics-text; version=1.0.0`, for a scraper that asks for it.
    OpenMetrics,
}

impl Exposition {
    /// The format a request's `Accept` header asks for: OpenMetrics only when named.
    pub(crate) fn negotiate(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::PrometheusText,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Exposition::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
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
    tickets: Family<StateLabel, Gauge>,
    tickets_opened: Family<SourceOnly, Counter>,
    ticket_decisions: Family<TicketDecisionLabels, Counter>,
    layers: Family<LayerLabel, Gauge>,
    agent_autonomy: Family<AgentLevelLabels, Gauge>,
    agent_frozen: Family<AgentLabel, Gauge>,
    agent_processes: Family<AgentLabel, Gauge>,
    kill_switch: Family<KillSwitchLabels, Counter>,
    autonomy_changes: Family<AutonomyChangeLabels, Counter>,
    notifications: Family<ResultLabel, Counter>,
    dns_queries: Family<OutcomeLabel, Counter>,
    dns_cache_lookups: Family<ResultLabel, Counter>,
    dns_cache_entries: Gauge,
    dns_resolved_addresses: Gauge,
    audit_log_up: Gauge,
    audit_records: Family<ResultLabel, Counter>,
    audit_witness_lag: Family<WitnessLabel, Gauge>,
    kernel_denials: Family<StateLabel, Gauge>,
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
        let tickets = Family::<StateLabel, Gauge>::default();
        registry.register(
            "approval_tickets",
            "Tickets in the approval queue by state (open: waiting for a human)",
            tickets.clone(),
        );
        let tickets_opened = Family::<SourceOnly, Counter>::default();
        registry.register(
            "approval_tickets_opened",
            "Approval tickets opened, by the door the escalation came through (repeats that joined an open ticket are not counted)",
            tickets_opened.clone(),
        );
        let ticket_decisions = Family::<TicketDecisionLabels, Counter>::default();
        registry.register(
            "approval_decisions",
            "Tickets decided, by decision (approved, denied) and by whom (person, timeout)",
            ticket_decisions.clone(),
        );
        let layers = Family::<LayerLabel, Gauge>::default();
        registry.register(
            "layer_active",
            "Whether each enforcement layer is active on this kernel (1) or not (0)",
            layers.clone(),
        );
        let agent_autonomy = Family::<AgentLevelLabels, Gauge>::default();
        registry.register(
            "agent_autonomy",
            "The autonomy level in force for each agent (1 for its level, 0 for the others)",
            agent_autonomy.clone(),
        );
        let agent_frozen = Family::<AgentLabel, Gauge>::default();
        registry.register(
            "agent_frozen",
            "Whether the agent's cgroup is frozen by the kill switch (1) or running (0)",
            agent_frozen.clone(),
        );
        let agent_processes = Family::<AgentLabel, Gauge>::default();
        registry.register(
            "agent_processes",
            "Processes in the agent's cgroup",
            agent_processes.clone(),
        );
        let kill_switch = Family::<KillSwitchLabels, Counter>::default();
        registry.register(
            "kill_switch_actions",
            "Kill switch actions done, by agent and action (freeze, thaw, kill)",
            kill_switch.clone(),
        );
        let autonomy_changes = Family::<AutonomyChangeLabels, Counter>::default();
        registry.register(
            "autonomy_changes",
            "Autonomy changes, by agent and by whom (person, automatic)",
            autonomy_changes.clone(),
        );
        let notifications = Family::<ResultLabel, Counter>::default();
        registry.register(
            "notifications",
            "Webhook notifications of tickets, by result: delivered, retried (an attempt failed and is tried again), failed (given up), dropped (the queue was full)",
            notifications.clone(),
        );
        let dns_queries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "dns_queries",
            "Agents' DNS queries answered by the daemon's resolver, by outcome: answered, refused (a name the allowlist does not name), unanswerable (not one question), upstream_failure",
            dns_queries.clone(),
        );
        let dns_cache_lookups = Family::<ResultLabel, Counter>::default();
        registry.register(
            "dns_cache_lookups",
            "Lookups in the resolver's answer cache, by result (hit, miss)",
            dns_cache_lookups.clone(),
        );
        let dns_cache_entries = Gauge::default();
        registry.register(
            "dns_cache_entries",
            "Answers in the resolver's cache",
            dns_cache_entries.clone(),
        );
        let dns_resolved_addresses = Gauge::default();
        registry.register(
            "dns_resolved_addresses",
            "Addresses that DNS answers allowed agents to connect to, not yet expired, over every agent",
            dns_resolved_addresses.clone(),
        );
        let audit_log_up = Gauge::default();
        registry.register(
            "audit_log_up",
            "Whether the audit log is being written (1) or failing (0: checks that must be recorded are refused)",
            audit_log_up.clone(),
        );
        let audit_records = Family::<ResultLabel, Counter>::default();
        registry.register(
            "audit_records",
            "Audit records since the daemon started, by result: committed, failed (could not be written; the producer was told), refused (not queued: failing log or loss bound)",
            audit_records.clone(),
        );
        let audit_witness_lag = Family::<WitnessLabel, Gauge>::default();
        registry.register(
            "audit_witness_lag_records",
            "Committed records not yet covered by a checkpoint the witness acknowledged",
            audit_witness_lag.clone(),
        );
        let kernel_denials = Family::<StateLabel, Gauge>::default();
        registry.register(
            "kernel_denials",
            "The kernel's counted denials and escalations: counted (in the counter epochs the kernel still holds), committed (as records, ever), lost_in_crash (audited as lost after a daemon crash, ever), pending (counted, not yet accounted for)",
            kernel_denials.clone(),
        );
        Metrics {
            kernel_denials,
            registry,
            decisions,
            latency,
            findings,
            redacted,
            scans,
            api_responses,
            events_received,
            events_lost,
            tickets,
            tickets_opened,
            ticket_decisions,
            layers,
            agent_autonomy,
            agent_frozen,
            agent_processes,
            kill_switch,
            autonomy_changes,
            notifications,
            dns_queries,
            dns_cache_lookups,
            dns_cache_entries,
            dns_resolved_addresses,
            audit_log_up,
            audit_records,
            audit_witness_lag,
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

    /// A new ticket (not a repeat joining an open one).
    pub(crate) fn ticket_opened(&self, source: Source) {
        self.tickets_opened
            .get_or_create(&SourceOnly {
                source: source.as_str(),
            })
            .inc();
    }

    /// A ticket decided; `by_timeout`: by the timeout policy rather than a person.
    pub(crate) fn ticket_decided(&self, status: TicketStatus, by_timeout: bool) {
        self.ticket_decisions
            .get_or_create(&TicketDecisionLabels {
                decision: status.as_str(),
                by: if by_timeout { "timeout" } else { "person" },
            })
            .inc();
    }

    pub(crate) fn kill_switch(&self, agent: &str, action: &'static str) {
        self.kill_switch
            .get_or_create(&KillSwitchLabels {
                agent: agent.to_owned(),
                action,
            })
            .inc();
    }

    pub(crate) fn autonomy_changed(&self, agent: &str, automatic: bool) {
        self.autonomy_changes
            .get_or_create(&AutonomyChangeLabels {
                agent: agent.to_owned(),
                by: if automatic { "automatic" } else { "person" },
            })
            .inc();
    }

    /// The exposition, with the snapshot's values brought up to date.
    pub(crate) fn encode(&self, snapshot: &Snapshot, format: Exposition) -> String {
        let _guard = super::locks::lock(&self.encode_lock);
        catch_up(&self.events_received, snapshot.events_received);
        catch_up(&self.events_lost, snapshot.events_lost);
        if let Some(d) = &snapshot.kernel_denials {
            for (state, n) in [
                ("counted", d.counted),
                ("committed", d.committed),
                ("lost_in_crash", d.lost_in_crash),
                ("pending", d.pending),
            ] {
                self.kernel_denials
                    .get_or_create(&StateLabel { state })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        if let Some(counts) = &snapshot.tickets {
            for status in [
                TicketStatus::Open,
                TicketStatus::Approved,
                TicketStatus::Denied,
            ] {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                self.tickets
                    .get_or_create(&StateLabel {
                        state: status.as_str(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        for (result, n) in &snapshot.notifications {
            catch_up(
                &self.notifications.get_or_create(&ResultLabel { result }),
                *n,
            );
        }
        if let Some(dns) = &snapshot.dns {
            for (outcome, n) in [
                ("answered", dns.answered),
                ("refused", dns.refused),
                ("unanswerable", dns.unanswerable),
                ("upstream_failure", dns.upstream_failures),
            ] {
                catch_up(
                    &self.dns_queries.get_or_create(&OutcomeLabel { outcome }),
                    n,
                );
            }
            for (result, n) in [("hit", dns.cache_hits), ("miss", dns.cache_misses)] {
                catch_up(
                    &self
                        .dns_cache_lookups
                        .get_or_create(&ResultLabel { result }),
                    n,
                );
            }
            self.dns_cache_entries
                .set(i64::try_from(dns.cache_entries).unwrap_or(i64::MAX));
            self.dns_resolved_addresses
                .set(i64::try_from(dns.resolved_addresses).unwrap_or(i64::MAX));
        }
        if let Some(audit) = &snapshot.audit {
            self.audit_log_up.set(i64::from(audit.failing.is_none()));
            for (result, n) in [
                ("committed", audit.records_committed),
                ("failed", audit.records_failed),
                ("refused", audit.records_refused),
            ] {
                catch_up(
                    &self.audit_records.get_or_create(&ResultLabel { result }),
                    n,
                );
            }
            self.audit_witness_lag.clear();
            for w in &audit.witnesses {
                let lag = audit.committed_seq.saturating_sub(w.witnessed_seq);
                self.audit_witness_lag
                    .get_or_create(&WitnessLabel {
                        witness: w.witness.clone(),
                    })
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
        self.layers.clear();
        for (layer, active) in &snapshot.layers {
            self.layers
                .get_or_create(&LayerLabel {
                    layer: layer.clone(),
                })
                .set(i64::from(*active));
        }
        self.agent_autonomy.clear();
        self.agent_frozen.clear();
        self.agent_processes.clear();
        for agent in &snapshot.agents {
            for level in AutonomyLevel::ALL {
                self.agent_autonomy
                    .get_or_create(&AgentLevelLabels {
                        agent: agent.name.clone(),
                        level: level.as_str(),
                    })
                    .set(i64::from(level == agent.autonomy));
            }
            let label = AgentLabel {
                agent: agent.name.clone(),
            };
            self.agent_frozen
                .get_or_create(&label)
                .set(i64::from(agent.frozen));
            self.agent_processes
                .get_or_create(&label)
                .set(i64::try_from(agent.processes).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        match format {
            Exposition::OpenMetrics => out,
            Exposition::PrometheusText => prometheus_text(&out),
        }
    }
}

/// OpenMetrics (what prometheus-client writes) as Prometheus text 0.0.4: a counter family's
/// HELP and TYPE name its samples' name (`x_total`, where OpenMetrics names the family `x`),
/// and there are no `# UNIT` or `# EOF` lines.
fn prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let lines: Vec<&str> = open_metrics.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line == "# EOF" || line.starts_with("# UNIT ") {
            i += 1;
            continue;
        }
        // A family starts with its HELP line, its TYPE line next.
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, text) = help.split_once(' ').unwrap_or((help, ""));
            let kind = lines
                .get(i + 1)
                .and_then(|l| l.strip_prefix("# TYPE "))
                .and_then(|t| t.split_once(' '))
                .filter(|(n, _)| *n == name)
                .map(|(_, kind)| kind);
            let sample_name = match kind {
                Some("counter") => format!("{name}_total"),
                _ => name.to_owned(),
            };
            out.push_str(&format!("# HELP {sample_name} {text}\n"));
            if let Some(kind) = kind {
                out.push_str(&format!("# TYPE {sample_name} {kind}\n"));
                i += 1;
            }
            i += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

/// Counters only go up: raise `counter` to `value` (kept elsewhere) if it is behind.
fn catch_up(counter: &Counter<u64, AtomicU64>, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_families_by_their_samples_and_drops_eof() {
        let open_metrics = "# HELP secops_decisions Decisions made.\n\
            # TYPE secops_decisions counter\n\
            secops_decisions_total{verdict=\"allow\"} 2\n\
            # HELP secops_approval_tickets Tickets.\n\
            # TYPE secops_approval_tickets gauge\n\
            secops_approval_tickets{state=\"open\"} 1\n\
            # HELP secops_latency_seconds Latency.\n\
            # TYPE secops_latency_seconds histogram\n\
            # UNIT secops_latency_seconds seconds\n\
            secops_latency_seconds_sum 0.5\n\
            # EOF\n";
        assert_eq!(
            prometheus_text(open_metrics),
            "# HELP secops_decisions_total Decisions made.\n\
             # TYPE secops_decisions_total counter\n\
             secops_decisions_total{verdict=\"allow\"} 2\n\
             # HELP secops_approval_tickets Tickets.\n\
             # TYPE secops_approval_tickets gauge\n\
             secops_approval_tickets{state=\"open\"} 1\n\
             # HELP secops_latency_seconds Latency.\n\
             # TYPE secops_latency_seconds histogram\n\
             secops_latency_seconds_sum 0.5\n"
        );
    }

    #[test]
    fn openmetrics_only_when_the_scraper_names_it() {
        assert_eq!(Exposition::negotiate(None), Exposition::PrometheusText);
        assert_eq!(
            Exposition::negotiate(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")),
            Exposition::PrometheusText
        );
        assert_eq!(
            Exposition::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Exposition::OpenMetrics
        );
    }

    #[test]
    fn every_family_has_help_and_type_and_scrape_time_families_follow_the_snapshot() {
        let metrics = Metrics::new();
        let agent = |name: &str| AgentSnapshot {
            name: name.to_owned(),
            autonomy: AutonomyLevel::Semi,
            frozen: false,
            processes: 1,
        };
        let snapshot = Snapshot {
            layers: vec![("egress allowlist".into(), true)],
            agents: vec![agent("a"), agent("b")],
            ..Snapshot::default()
        };
        metrics.kill_switch("a", "freeze");
        let text = metrics.encode(&snapshot, Exposition::PrometheusText);
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        assert!(types >= 7, "{text}");
        assert!(text.contains("secops_agent_frozen{agent=\"b\"} 0"));
        let only_a = Snapshot {
            agents: vec![agent("a")],
            ..Snapshot::default()
        };
        let text = metrics.encode(&only_a, Exposition::PrometheusText);
        assert!(!text.contains("agent=\"b\""), "{text}");
        assert!(text.contains("secops_kill_switch_actions_total{agent=\"a\",action=\"freeze\"} 1"));
        let with_dns = Snapshot {
            dns: Some(crate::api::DnsStatus {
                active: true,
                detail: String::new(),
                agents: Vec::new(),
                cache_entries: 4,
                cache_hits: 7,
                cache_misses: 2,
                resolved_addresses: 5,
                answered: 9,
                refused: 3,
                unanswerable: 0,
                upstream_failures: 1,
            }),
            ..Snapshot::default()
        };
        let text = metrics.encode(&with_dns, Exposition::PrometheusText);
        for line in [
            "secops_dns_queries_total{outcome=\"refused\"} 3",
            "secops_dns_queries_total{outcome=\"upstream_failure\"} 1",
            "secops_dns_cache_lookups_total{result=\"hit\"} 7",
            "secops_dns_cache_entries 4",
            "secops_dns_resolved_addresses 5",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
