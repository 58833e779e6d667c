//! An agent's egress allowlist as the engine applies it to `net:connect` and `net:send`.

use std::net::IpAddr;
use std::sync::Arc;

use secops_common::{CoreAction, RiskLevel, Verdict};

use crate::policy::pattern::PortRange;
use crate::policy::{Egress, EgressTarget, Unlisted};

use super::ActionRequest;

pub struct EgressCheck {
    pub allowlist: Egress,
    pub allow_rule: Arc<str>,
    pub deny_rule: Arc<str>,
    pub dns_rule: Arc<str>,
    pub deny_reason: Arc<str>,
    pub ask_rule: Arc<str>,
    pub ask_reason: Arc<str>,
    pub allow_reason: Arc<str>,
    pub dns_reason: Arc<str>,
    pub name_reason: Arc<str>,
    pub unlisted_name_reason: Arc<str>,
    pub ask_name_reason: Arc<str>,
}

/// The egress stage's opinion, as one more matched rule.
pub struct EgressOutcome<'a> {
    pub verdict: Verdict,
    pub risk: RiskLevel,
    pub rule: &'a Arc<str>,
    pub reason: &'a Arc<str>,
}

impl EgressCheck {
    pub fn new(agent: &str, allowlist: Egress) -> EgressCheck {
        EgressCheck {
            allowlist,
            allow_rule: Arc::from(format!("egress.{agent}")),
            deny_rule: Arc::from(format!("egress.{agent}.default-deny")),
            dns_rule: Arc::from(format!("egress.{agent}.dns")),
            deny_reason: Arc::from(format!(
                "destination is not in the egress allowlist of agent {agent}"
            )),
            ask_rule: Arc::from(format!("egress.{agent}.unlisted")),
            ask_reason: Arc::from(format!(
                "destination is not in the egress allowlist of agent {agent}, which asks a human about such destinations"
            )),
            allow_reason: Arc::from(format!(
                "destination is in the egress allowlist of agent {agent}"
            )),
            dns_reason: Arc::from(format!("DNS to a resolver configured for agent {agent}")),
            name_reason: Arc::from(format!(
                "the name is in the egress allowlist of agent {agent}"
            )),
            unlisted_name_reason: Arc::from(format!(
                "the name is not in the egress allowlist of agent {agent}"
            )),
            ask_name_reason: Arc::from(format!(
                "the name is not in the egress allowlist of agent {agent}, which asks a human about such destinations"
            )),
        }
    }

    /// `None` for actions egress does not judge. UDP (`net:send`) may only reach the
    /// configured resolvers; connections may reach the allowlist or a resolver's DNS port;
    /// a name may be resolved (`net:dns`) when an allowlist entry names it, exactly or by a
    /// wildcard, whatever its ports.
    pub fn judge(
        &self,
        request: &ActionRequest<'_>,
        core: Option<CoreAction>,
    ) -> Option<EgressOutcome<'_>> {
        let is_send = match core {
            Some(CoreAction::NetConnect) => false,
            Some(CoreAction::NetSend) => true,
            Some(CoreAction::NetDns) => return Some(self.judge_name(request.host)),
            _ => return None,
        };
        let to_resolver = request.addr.is_some_and(|a| {
            self.allowlist
                .dns_resolvers
                .iter()
                .any(|r| r.ip() == a && Some(r.port()) == request.port)
        });
        if to_resolver {
            return Some(EgressOutcome {
                verdict: Verdict::Allow,
                risk: RiskLevel::Low,
                rule: &self.dns_rule,
                reason: &self.dns_reason,
            });
        }
        if !is_send && self.allows(request.addr, request.host, request.port) {
            return Some(EgressOutcome {
                verdict: Verdict::Allow,
                risk: RiskLevel::Low,
                rule: &self.allow_rule,
                reason: &self.allow_reason,
            });
        }
        Some(match self.allowlist.unlisted {
            Unlisted::Deny => EgressOutcome {
                verdict: Verdict::Deny,
                risk: RiskLevel::High,
                rule: &self.deny_rule,
                reason: &self.deny_reason,
            },
            Unlisted::Escalate => EgressOutcome {
                verdict: Verdict::Escalate,
                risk: RiskLevel::High,
                rule: &self.ask_rule,
                reason: &self.ask_reason,
            },
        })
    }

    fn judge_name(&self, host: Option<&str>) -> EgressOutcome<'_> {
        let listed = host.is_some_and(|h| {
            self.allowlist
                .allow
                .iter()
                .any(|entry| match &entry.target {
                    EgressTarget::Host(pattern) => pattern.matches(h),
                    EgressTarget::Cidr(_) => false,
                })
        });
        if listed {
            return EgressOutcome {
                verdict: Verdict::Allow,
                risk: RiskLevel::Low,
                rule: &self.allow_rule,
                reason: &self.name_reason,
            };
        }
        match self.allowlist.unlisted {
            Unlisted::Deny => EgressOutcome {
                verdict: Verdict::Deny,
                risk: RiskLevel::High,
                rule: &self.deny_rule,
                reason: &self.unlisted_name_reason,
            },
            Unlisted::Escalate => EgressOutcome {
                verdict: Verdict::Escalate,
                risk: RiskLevel::High,
                rule: &self.ask_rule,
                reason: &self.ask_name_reason,
            },
        }
    }

    fn allows(&self, addr: Option<IpAddr>, host: Option<&str>, port: Option<u16>) -> bool {
        let port_ok = |ports: &[PortRange]| {
            ports.is_empty() || port.is_some_and(|p| ports.iter().any(|r| r.contains(p)))
        };
        self.allowlist.allow.iter().any(|entry| {
            let target_ok = match &entry.target {
                EgressTarget::Cidr(net) => addr.is_some_and(|a| net.contains(&a)),
                EgressTarget::Host(pattern) => host.is_some_and(|h| pattern.matches(h)),
            };
            target_ok && port_ok(&entry.ports)
        })
    }
}
