//! Egress allowlists in the kernel's terms: each agent's networks and ports for the LPM tries
//! the cgroup connect/sendmsg programs look up, with host names as the daemon resolved them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use secops_common::kernel::{PROTO_TCP, PROTO_UDP};

use crate::kernel::{EgressAllow, PortRule};
use crate::policy::{EgressDefault, EgressTarget, Policy};

/// Resolved addresses of the host names in egress allowlists.
pub(crate) type HostAddrs = BTreeMap<String, Vec<IpAddr>>;

/// Whether the kernel holds the agent to an allowlist: it has one, or the policy's default
/// gives agents without one an empty one.
pub(crate) fn egress_enforced(policy: &Policy, agent: &str) -> bool {
    policy.egress.contains_key(agent) || policy.defaults.egress == EgressDefault::Deny
}

/// The exact host names the policy's allowlists name (wildcards cannot be resolved).
pub(crate) fn allowlist_hosts(policy: &Policy) -> Vec<String> {
    let mut names: Vec<String> = policy
        .egress
        .values()
        .flat_map(|e| e.allow.iter())
        .filter_map(|entry| match &entry.target {
            EgressTarget::Host(pattern) => pattern.exact_name().map(str::to_owned),
            EgressTarget::Cidr(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One agent's allowlist in the kernel's terms. TCP (and connected UDP) may reach the
/// allowlist's networks on its ports; UDP may reach only the resolvers' port 53, which is the
/// engine's rule too (`net:send` to resolvers only).
pub(crate) fn compile_allowlist(
    policy: &Policy,
    agent: &str,
    hosts: &HostAddrs,
) -> Vec<EgressAllow> {
    let Some(egress) = policy.egress.get(agent) else {
        return Vec::new();
    };
    let mut allow = Vec::new();
    for entry in &egress.allow {
        let ports: Vec<PortRule> = if entry.ports.is_empty() {
            vec![PortRule::new(0, u16::MAX, PROTO_TCP)]
        } else {
            entry
                .ports
                .iter()
                .map(|r| PortRule::new(r.lo, r.hi, PROTO_TCP))
                .collect()
        };
        match &entry.target {
            EgressTarget::Cidr(net) => allow.push(EgressAllow {
                network: *net,
                ports,
            }),
            EgressTarget::Host(pattern) => {
                let addrs = pattern
                    .exact_name()
                    .and_then(|n| hosts.get(n))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                for addr in addrs {
                    allow.push(EgressAllow {
                        network: IpNet::from(addr.to_canonical()),
                        ports: ports.clone(),
                    });
                }
            }
        }
    }
    for resolver in &egress.dns_resolvers {
        allow.push(EgressAllow {
            network: IpNet::from(*resolver),
            ports: vec![PortRule::new(53, 53, PROTO_TCP | PROTO_UDP)],
        });
    }
    allow
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy_str;
    use std::path::Path;

    #[test]
    fn allowlists_compile_to_tcp_ranges_resolvers_and_resolved_hosts() {
        let policy = parse_policy_str(
            Path::new("p.yaml"),
            "agents:\n  - {name: a, workspace: /w}\negress:\n  a:\n    allow:\n\
             \x20     - {cidr: 127.0.0.0/8, ports: [\"8000-8100\", 22]}\n\
             \x20     - {cidr: \"::1/128\"}\n\
             \x20     - {host: pkg.test, ports: [443]}\n\
             \x20     - {host: \"*.wild.test\", ports: [443]}\n\
             \x20   dns_resolvers: [127.0.0.53]\n",
        )
        .unwrap();
        assert_eq!(allowlist_hosts(&policy), ["pkg.test"]);
        let hosts: HostAddrs = [(
            "pkg.test".to_owned(),
            vec![
                "10.9.8.7".parse().unwrap(),
                "::ffff:10.9.8.6".parse().unwrap(),
            ],
        )]
        .into();
        let allow = compile_allowlist(&policy, "a", &hosts);
        let shown: Vec<String> = allow
            .iter()
            .map(|a| {
                format!(
                    "{} {:?}",
                    a.network,
                    a.ports
                        .iter()
                        .map(|p| (p.lo, p.hi, p.protocols))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "127.0.0.0/8 [(8000, 8100, 1), (22, 22, 1)]",
                "::1/128 [(0, 65535, 1)]",
                "10.9.8.7/32 [(443, 443, 1)]",
                "10.9.8.6/32 [(443, 443, 1)]",
                "127.0.0.53/32 [(53, 53, 3)]",
            ]
        );
        assert!(compile_allowlist(&policy, "nobody", &hosts).is_empty());
    }
}
