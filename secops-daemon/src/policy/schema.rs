//! The policy file as written: what serde_yaml reads, before any meaning is checked.
//! Unknown keys are errors everywhere, so a misspelt field never silently does nothing.

use std::collections::BTreeMap;

use secops_common::{AutonomyLevel, RiskLevel, Verdict};
use serde::Deserialize;

use super::response::ResponsePolicy;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The policy language version; only 1 exists.
    pub version: Option<u32>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub action_types: Vec<ActionTypeDecl>,
    pub defaults: Option<DefaultsSpec>,
    #[serde(default)]
    pub agents: Vec<AgentSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Agent name to its allowlist. A BTreeMap keeps error order stable.
    #[serde(default)]
    pub egress: BTreeMap<String, EgressSpec>,
    /// What happens to tickets nobody decides. One file of a policy may set it.
    pub approvals: Option<ApprovalsSpec>,
    /// Where the daemon moves sealed audit segments. One file of a policy may set it.
    pub retention: Option<super::retention::RetentionSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionTypeDecl {
    pub name: String,
    /// The risk of this action when no rule matches it. Without one, an unmatched action of
    /// this type cannot be classified and escalates.
    pub risk: Option<RiskLevel>,
    /// For the people reading the policy; the engine has no use for it.
    #[allow(dead_code)]
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    pub autonomy: Option<AutonomyLevel>,
    /// What `~` means for agents without a `home`.
    pub homes: Option<Vec<String>>,
    /// Egress for agents without an `egress` entry.
    pub egress: Option<EgressDefault>,
    /// Risk of unmatched actions, by action type or `category:*`, over the built-in table.
    #[serde(default)]
    pub risk: BTreeMap<String, RiskLevel>,
    /// What the output scanner does with findings, for agents without their own.
    pub output_scan: Option<ResponsePolicy>,
    /// `off` or `{denials: N, within: DURATION}`; read raw so each mistake is placed exactly
    /// (see `policy::auto_lower`).
    pub auto_lower: Option<serde_yaml::Value>,
    /// The account agents without their own `user` run as.
    pub user: Option<UserSpec>,
    /// Kernel layers (`lsm`, `egress`, `events`, `dns`, `landlock`) the daemon must not start without.
    pub require: Option<Vec<String>>,
}

/// A user account, by name or by number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UserSpec {
    Id(u32),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressDefault {
    Deny,
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub name: String,
    /// The agent's cgroup name under the secops root cgroup; defaults to the agent's name.
    pub cgroup: Option<String>,
    pub workspace: String,
    pub home: Option<String>,
    pub autonomy: Option<AutonomyLevel>,
    /// What the output scanner does with findings in this agent's tool output.
    pub output_scan: Option<ResponsePolicy>,
    /// Overrides `defaults.auto_lower` for this agent.
    pub auto_lower: Option<serde_yaml::Value>,
    /// The account `secops run` starts the agent as (over `defaults.user`).
    pub user: Option<UserSpec>,
    /// `secops run` makes a missing workspace, owned by the agent's user (default: a missing
    /// workspace is an error).
    pub create_workspace: Option<bool>,
    /// Layers, beyond `defaults.require`, `secops run` refuses to start this agent without.
    pub require: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub description: Option<String>,
    pub actions: Vec<String>,
    /// Limit the rule to these agents; all agents when absent.
    pub agents: Option<Vec<String>>,
    // The selectors are spelled out rather than a flattened SelectorSpec: serde ignores
    // deny_unknown_fields on a struct with a flattened field.
    pub paths: Option<Vec<String>>,
    pub binaries: Option<Vec<String>>,
    pub cidrs: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub ports: Option<Vec<serde_yaml::Value>>,
    pub unless: Option<SelectorSpec>,
    /// When absent, the agent's autonomy turns `risk` into the verdict.
    pub verdict: Option<Verdict>,
    pub risk: RiskLevel,
    #[serde(default)]
    pub hard: bool,
    pub reason: Option<String>,
}

/// What a rule (or its `unless`) matches. Each kind given must match; within a kind, any
/// entry may.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorSpec {
    pub paths: Option<Vec<String>>,
    pub binaries: Option<Vec<String>>,
    pub cidrs: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    /// `443` or `"8000-8100"`; read as raw values so a bad one gets a precise message.
    pub ports: Option<Vec<serde_yaml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    #[serde(default)]
    pub allow: Vec<EgressEntrySpec>,
    /// The agent's DNS resolvers, `ADDR` (port 53) or `ADDR:PORT` (`[V6]:PORT`): the
    /// upstreams secops' resolver forwards the agent's allowed names to (or, where the DNS
    /// layer is not active, the only UDP destinations the agent may reach).
    #[serde(default)]
    pub dns_resolvers: Vec<String>,
    /// `deny` (default) or `escalate`: what destinations outside the allowlist get.
    pub unlisted: Option<Verdict>,
    /// What a refused DNS query is answered with: `refused` (default) or `nxdomain`.
    pub dns_refusal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressEntrySpec {
    pub cidr: Option<String>,
    pub host: Option<String>,
    /// All ports when absent.
    pub ports: Option<Vec<serde_yaml::Value>>,
    /// DNS query types the name may be asked about beyond A and AAAA (`TXT`, `MX`, ...);
    /// host entries only.
    pub dns_types: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSpec {
    /// How long a ticket waits for a human, e.g. `10m`; read raw so that a bare number (whose
    /// unit would be a guess) gets a precise message.
    pub timeout: Option<serde_yaml::Value>,
    pub on_timeout: Option<OnTimeoutSpec>,
}

/// Per risk tier; a tier left out is `deny`. Unknown tiers are errors like any unknown key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnTimeoutSpec {
    pub low: Option<OnTimeout>,
    pub medium: Option<OnTimeout>,
    pub high: Option<OnTimeout>,
    pub critical: Option<OnTimeout>,
}

/// What the timeout policy does with a ticket nobody decided in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// Close it denied.
    Deny,
    /// Close it approved, with the default grant (low risk only).
    Allow,
    /// Leave it open for a human.
    Wait,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Deny => "deny",
            OnTimeout::Allow => "allow",
            OnTimeout::Wait => "wait",
        }
    }
}
