//! A policy after validation: every name resolved, every pattern checked. Only the loader
//! builds one, so holding a `Policy` means holding a whole, valid policy.

use super::response::ResponsePolicy;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use secops_common::{ActionId, ActionRegistry, AutonomyLevel, RiskLevel, Verdict};

use super::auto_lower::AutoLower;
use super::pattern::{HostPattern, PathPattern, PortRange};
pub use super::schema::{EgressDefault, OnTimeout};

#[derive(Debug, Clone)]
pub struct Policy {
    pub registry: ActionRegistry,
    pub defaults: Defaults,
    pub agents: Vec<Agent>,
    /// In file order, includes first where they are named.
    pub rules: Vec<Rule>,
    pub egress: BTreeMap<String, Egress>,
    pub approvals: Approvals,
    /// Risk of an action no rule matched, by action id; `None` means it cannot be classified.
    pub default_risk: Vec<Option<RiskLevel>>,
    /// Every file the policy was read from, the top-level one first.
    pub files: Vec<PathBuf>,
    /// SHA-256 (hex) over every file's path and content, in `files` order: what audit
    /// records of reloads name, so a policy in force can be matched to its files.
    pub content_hash: String,
    /// The `retention:` section: the daemon moves sealed audit segments out on a timer.
    pub retention: Option<super::retention::Retention>,
}

#[derive(Debug, Clone)]
pub struct Defaults {
    pub autonomy: AutonomyLevel,
    /// What `~` stands for where an agent has no `home`.
    pub homes: Vec<String>,
    /// The same homes, parsed.
    pub home_patterns: Vec<PathPattern>,
    pub egress: EgressDefault,
    pub output_scan: ResponsePolicy,
    /// When agents without their own `auto_lower` lose autonomy; `None` is `off`.
    pub auto_lower: Option<AutoLower>,
    /// The account agents without their own `user` run as.
    pub user: Option<AgentUser>,
    /// Kernel layers the daemon must not run without: one inactive on this kernel is a
    /// start-up error (and a reload naming one is refused).
    pub require: Vec<Layer>,
}

/// A kernel-dependent layer of enforcement, as `require:` names it and `secops status`
/// keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// The BPF LSM programs: synchronous file, exec, socket and self-protection denials.
    Lsm,
    /// The cgroup connect/sendmsg programs: the egress allowlist.
    Egress,
    /// The exec/exit (and, without BPF LSM, file) tracepoints.
    Events,
    /// The daemon's resolver for agents' DNS.
    Dns,
    /// The Landlock ruleset `secops run` applies to agents where BPF LSM does not enforce.
    Landlock,
}

impl Layer {
    pub const ALL: [Layer; 5] = [
        Layer::Lsm,
        Layer::Egress,
        Layer::Events,
        Layer::Dns,
        Layer::Landlock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Lsm => "lsm",
            Layer::Egress => "egress",
            Layer::Events => "events",
            Layer::Dns => "dns",
            Layer::Landlock => "landlock",
        }
    }

    pub fn parse(name: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to approval tickets nobody decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    /// How long a ticket waits for a human, from when it was opened.
    pub timeout: std::time::Duration,
    /// By risk, in [`RiskLevel::ALL`] order.
    on_timeout: [OnTimeout; 4],
}

impl Approvals {
    /// Ten minutes, then denied, whatever the risk: a question nobody answers is a no.
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

    pub fn new(timeout: std::time::Duration, on_timeout: [OnTimeout; 4]) -> Approvals {
        Approvals {
            timeout,
            on_timeout,
        }
    }

    pub fn on_timeout(&self, risk: RiskLevel) -> OnTimeout {
        self.on_timeout[risk_index(risk)]
    }
}

impl Default for Approvals {
    fn default() -> Approvals {
        Approvals::new(Approvals::DEFAULT_TIMEOUT, [OnTimeout::Deny; 4])
    }
}

fn risk_index(risk: RiskLevel) -> usize {
    match risk {
        RiskLevel::Low => 0,
        RiskLevel::Medium => 1,
        RiskLevel::High => 2,
        RiskLevel::Critical => 3,
    }
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    pub cgroup: String,
    pub workspace: String,
    pub home: Option<String>,
    pub autonomy: AutonomyLevel,
    /// The output scanner's response policy (the agent's own, else the default).
    pub output_scan: ResponsePolicy,
    /// When repeated denials lower this agent's autonomy (its own, else the default); `None`
    /// is `off`.
    pub auto_lower: Option<AutoLower>,
    /// Who `secops run` starts the agent as (its own, else the default); `None`: the policy
    /// names nobody, and `secops run` refuses to start the agent.
    pub user: Option<AgentUser>,
    /// `secops run` makes a missing workspace, owned by the agent's user.
    pub create_workspace: bool,
    /// Layers `secops run` refuses to start the agent without: `defaults.require` and the
    /// agent's own `require`.
    pub require: Vec<Layer>,
}

/// An account as the policy names it; resolved to ids when an agent is started, so an
/// account made after the policy loaded is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentUser {
    Name(String),
    Id(u32),
}

impl AgentUser {
    /// Whether this is the superuser (by name or by id).
    pub fn is_root(&self) -> bool {
        matches!(self, AgentUser::Id(0)) || matches!(self, AgentUser::Name(n) if n == "root")
    }
}

impl std::fmt::Display for AgentUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentUser::Name(name) => f.write_str(name),
            AgentUser::Id(uid) => write!(f, "uid {uid}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub actions: Vec<ActionId>,
    /// `None`: every agent.
    pub agents: Option<Vec<String>>,
    pub selectors: Selectors,
    pub unless: Option<Selectors>,
    pub verdict: Option<Verdict>,
    pub risk: RiskLevel,
    pub hard: bool,
    /// Why the rule decides as it does: the rule's `reason`, else its `description`, else
    /// its id.
    pub reason: String,
    pub origin: Origin,
}

/// Where a rule was written, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

/// Each non-empty kind must match; within a kind any entry may.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub paths: Vec<PathPattern>,
    pub binaries: Vec<PathPattern>,
    pub cidrs: Vec<IpNet>,
    pub hosts: Vec<HostPattern>,
    pub ports: Vec<PortRange>,
}

impl Selectors {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
            && self.binaries.is_empty()
            && self.cidrs.is_empty()
            && self.hosts.is_empty()
            && self.ports.is_empty()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Egress {
    pub allow: Vec<EgressEntry>,
    /// Address and port (53 unless the policy says otherwise); IPv4-mapped addresses as IPv4.
    pub dns_resolvers: Vec<SocketAddr>,
    /// Destinations outside the allowlist: denied, or escalated (denied by the kernel until
    /// a human approves that destination).
    pub unlisted: Unlisted,
    /// The answer to a DNS query secops' resolver refuses.
    pub dns_refusal: DnsRefusal,
}

/// How secops' resolver answers a query it will not forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DnsRefusal {
    /// RCODE 5: the resolver will not answer this (the name may well exist).
    #[default]
    Refused,
    /// RCODE 3: as if the name did not exist (some clients stop retrying sooner).
    NxDomain,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unlisted {
    #[default]
    Deny,
    Escalate,
}

#[derive(Debug, Clone)]
pub struct EgressEntry {
    pub target: EgressTarget,
    /// Empty: every port.
    pub ports: Vec<PortRange>,
    /// DNS query types (their codes) the name may be asked about besides A and AAAA.
    pub dns_types: Vec<u16>,
}

#[derive(Debug, Clone)]
pub enum EgressTarget {
    Cidr(IpNet),
    Host(HostPattern),
}

impl Policy {
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// What `~` stands for in `agent`'s patterns: its own home, or every default home.
    pub fn homes_of<'a>(&'a self, agent: &'a Agent) -> &'a [String] {
        agent
            .home
            .as_ref()
            .map_or(&self.defaults.homes, std::slice::from_ref)
    }
}

impl Rule {
    /// Whether the rule applies to `agent` (`None`: a process of no known agent, which only
    /// rules without an `agents` scope reach).
    pub fn applies_to(&self, agent: Option<&str>) -> bool {
        self.agents
            .as_ref()
            .is_none_or(|scope| agent.is_some_and(|a| scope.iter().any(|s| s == a)))
    }
}
