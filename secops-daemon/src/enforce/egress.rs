//! Egress allowlists in the kernel's terms: each agent's networks and ports for the LPM tries
//! the cgroup connect/sendmsg programs look up, with host names as the daemon resolved them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use secops_common::kernel::{PROTO_TCP, PROTO_UDP};

use crate::kernel::{EgressAllow, PortRule};
use crate::policy::{Egress, EgressDefault, EgressEntry, EgressTarget, Policy};

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

/// The allowlist entries that name `name`, exactly or by a wildcard.
fn entries_naming<'a>(egress: &'a Egress, name: &'a str) -> impl Iterator<Item = &'a EgressEntry> {
    egress
        .allow
        .iter()
        .filter(move |entry| matches!(&entry.target, EgressTarget::Host(p) if p.matches(name)))
}

/// The ports an answer for `name` opens on its addresses: those of every entry naming it
/// (TCP, as every allowlist entry; an entry without ports opens every port).
pub(crate) fn name_ports(egress: &Egress, name: &str) -> Vec<PortRule> {
    let mut ports: Vec<PortRule> = entries_naming(egress, name).flat_map(entry_ports).collect();
    ports.sort();
    ports.dedup();
    ports
}

/// The DNS query types `name` may be asked about besides A and AAAA: those its entries list.
pub(crate) fn name_dns_types(egress: &Egress, name: &str) -> Vec<u16> {
    let mut types: Vec<u16> = entries_naming(egress, name)
        .flat_map(|e| e.dns_types.iter().copied())
        .collect();
    types.sort_unstable();
    types.dedup();
    types
}

fn entry_ports(entry: &EgressEntry) -> Vec<PortRule> {
    if entry.ports.is_empty() {
        vec![PortRule::new(0, u16::MAX, PROTO_TCP)]
    } else {
        entry
            .ports
            .iter()
            .map(|r| PortRule::new(r.lo, r.hi, PROTO_TCP))
            .collect()
    }
}

/// One agent's allowlist in the kernel's terms. TCP (and connected UDP) may reach the
/// allowlist's networks on its ports, and host names the addresses in `hosts` (what the daemon
/// resolved itself). With `dns_redirected` the agent's DNS is secops' (its port 53 goes to the
/// daemon's listener, its resolvers are the daemon's upstreams): the resolvers get no entry.
/// Without it, UDP may reach only the resolvers' port, which is the engine's rule too
/// (`net:send` to resolvers only).
pub(crate) fn compile_allowlist(
    policy: &Policy,
    agent: &str,
    hosts: &HostAddrs,
    dns_redirected: bool,
) -> Vec<EgressAllow> {
    let Some(egress) = policy.egress.get(agent) else {
        return Vec::new();
    };
    let mut allow = Vec::new();
    for entry in &egress.allow {
        let ports = entry_ports(entry);
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
    if !dns_redirected {
        for resolver in &egress.dns_resolvers {
            allow.push(EgressAllow {
                network: IpNet::from(resolver.ip()),
                ports: vec![PortRule::new(
                    resolver.port(),
                    resolver.port(),
                    PROTO_TCP | PROTO_UDP,
                )],
            });
        }
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
             \x20   dns_resolvers: [127.0.0.53, \"127.0.0.54:5353\"]\n",
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
        let allow = compile_allowlist(&policy, "a", &hosts, false);
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
                "127.0.0.54/32 [(5353, 5353, 3)]",
            ]
        );
        // With the DNS layer the resolvers are the daemon's upstreams, not destinations.
        assert_eq!(compile_allowlist(&policy, "a", &hosts, true).len(), 4);
        assert!(compile_allowlist(&policy, "nobody", &hosts, false).is_empty());
    }

    #[test]
    fn a_name_opens_the_ports_and_types_of_every_entry_naming_it() {
        let policy = parse_policy_str(
            Path::new("p.yaml"),
            "agents:\n  - {name: a, workspace: /w}\negress:\n  a:\n    allow:\n\
             \x20     - {host: api.test, ports: [443]}\n\
             \x20     - {host: \"*.test\", ports: [\"8000-8001\"], dns_types: [txt]}\n\
             \x20     - {host: mail.test, dns_types: [MX]}\n",
        )
        .unwrap();
        let egress = &policy.egress["a"];
        assert_eq!(
            name_ports(egress, "api.test"),
            [PortRule::tcp(443), PortRule::new(8000, 8001, PROTO_TCP)]
        );
        assert_eq!(name_dns_types(egress, "api.test"), [16]);
        assert_eq!(
            name_ports(egress, "mail.test"),
            [
                PortRule::new(0, u16::MAX, PROTO_TCP),
                PortRule::new(8000, 8001, PROTO_TCP)
            ]
        );
        assert_eq!(name_dns_types(egress, "mail.test"), [15, 16]);
        assert!(
            name_ports(egress, "test").is_empty(),
            "a wildcard is not its parent"
        );
        assert!(name_ports(egress, "other.example").is_empty());
    }
}
