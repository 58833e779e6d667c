//! An agent's egress allowlist as LPM trie entries.
//!
//! The kernel looks a destination up in `secops_egress4`/`secops_egress6` and checks the
//! port against the longest matching prefix only. So a prefix's entry must carry the
//! ranges of every shorter prefix of the same agent that contains it: "10.0.0.0/8 port 443"
//! and "10.1.0.0/16 port 80" become 10.0.0.0/8 → {443} and 10.1.0.0/16 → {80, 443}. This
//! module does that push-down, merges ranges so that each entry fits the kernel's fixed
//! array, and canonicalizes IPv4-mapped IPv6 networks to IPv4 (the kernel judges
//! `::ffff:a.b.c.d` destinations against the IPv4 trie).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use secops_common::kernel::{
    Egress4Key, Egress6Key, EgressValue, PortRange, MAX_PORT_RANGES, PROTO_TCP, PROTO_UDP,
};

use super::error::{KernelError, Result};

/// Ports `lo..=hi` for the protocols in `protocols` (`PROTO_TCP` | `PROTO_UDP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRule {
    pub lo: u16,
    pub hi: u16,
    pub protocols: u8,
}

impl PortRule {
    pub const fn new(lo: u16, hi: u16, protocols: u8) -> PortRule {
        PortRule { lo, hi, protocols }
    }
    pub const fn tcp(port: u16) -> PortRule {
        PortRule::new(port, port, PROTO_TCP)
    }
    pub const fn udp(port: u16) -> PortRule {
        PortRule::new(port, port, PROTO_UDP)
    }
    /// Every port, TCP and UDP.
    pub const fn any() -> PortRule {
        PortRule::new(0, u16::MAX, PROTO_TCP | PROTO_UDP)
    }
    pub const fn contains(&self, port: u16, protocol_bit: u8) -> bool {
        self.protocols & protocol_bit != 0 && self.lo <= port && port <= self.hi
    }
}

/// One allowlist entry: destinations in `network` on any of `ports`. A DNS resolver is an
/// entry with port 53 for TCP and UDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressAllow {
    pub network: IpNet,
    pub ports: Vec<PortRule>,
}

/// The trie entries of one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressEntries {
    pub v4: Vec<(Egress4Key, EgressValue)>,
    pub v6: Vec<(Egress6Key, EgressValue)>,
}

impl EgressEntries {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the kernel decides for a destination, by the same longest-prefix rule.
    pub fn allows(&self, addr: IpAddr, port: u16, protocol_bit: u8) -> bool {
        let value = match canonical_addr(addr) {
            IpAddr::V4(a) => longest_match(self.v4.iter().map(|(k, v)| {
                let net = Ipv4Net::new(Ipv4Addr::from(k.addr), (k.prefixlen - 32) as u8);
                (net.is_ok_and(|n| n.contains(&a)), k.prefixlen, v)
            })),
            IpAddr::V6(a) => longest_match(self.v6.iter().map(|(k, v)| {
                let net = Ipv6Net::new(Ipv6Addr::from(k.addr), (k.prefixlen - 32) as u8);
                (net.is_ok_and(|n| n.contains(&a)), k.prefixlen, v)
            })),
        };
        value.is_some_and(|v| {
            v.ranges[..(v.n_ranges as usize).min(MAX_PORT_RANGES)]
                .iter()
                .any(|r| PortRule::new(r.lo, r.hi, r.protocols).contains(port, protocol_bit))
        })
    }
}

fn longest_match<'a>(
    candidates: impl Iterator<Item = (bool, u32, &'a EgressValue)>,
) -> Option<&'a EgressValue> {
    candidates
        .filter(|(hit, _, _)| *hit)
        .max_by_key(|(_, len, _)| *len)
        .map(|(_, _, v)| v)
}

/// `::ffff:a.b.c.d` is `a.b.c.d`.
pub fn canonical_addr(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A network inside `::ffff:0:0/96` is the IPv4 network it maps. Networks that only
/// partly overlap it (`::/0`) stay IPv6: the kernel never looks IPv4-mapped destinations
/// up in the IPv6 trie, so, as in the policy engine, an IPv6 CIDR never allows an IPv4
/// destination.
fn canonical_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let Some(v4) = v6.network().to_ipv4_mapped() {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

/// The trie entries for `allow`: one per distinct network, each with the merged ranges of
/// every network of the list that contains it.
pub fn compile_egress(agent_index: u32, allow: &[EgressAllow]) -> Result<EgressEntries> {
    let mut by_net: BTreeMap<IpNet, Vec<PortRule>> = BTreeMap::new();
    for entry in allow {
        for rule in &entry.ports {
            if rule.lo > rule.hi {
                return Err(KernelError::InvalidPortRange {
                    lo: rule.lo,
                    hi: rule.hi,
                });
            }
            if rule.protocols & (PROTO_TCP | PROTO_UDP) == 0 {
                return Err(KernelError::NoProtocol {
                    lo: rule.lo,
                    hi: rule.hi,
                });
            }
        }
        if entry.ports.is_empty() {
            // Allows nothing; an entry for it would only repeat its parents' ranges.
            continue;
        }
        by_net
            .entry(canonical_net(entry.network))
            .or_default()
            .extend(entry.ports.iter().copied());
    }

    let mut entries = EgressEntries::default();
    for net in by_net.keys() {
        let pushed: Vec<PortRule> = by_net
            .iter()
            .filter(|(outer, _)| contains_net(outer, net))
            .flat_map(|(_, rules)| rules.iter().copied())
            .collect();
        let merged = merge_ranges(&pushed);
        if merged.len() > MAX_PORT_RANGES {
            return Err(KernelError::TooManyPortRanges {
                network: net.to_string(),
                count: merged.len(),
                max: MAX_PORT_RANGES,
            });
        }
        let mut value = EgressValue {
            n_ranges: merged.len() as u32,
            ..EgressValue::default()
        };
        for (slot, rule) in value.ranges.iter_mut().zip(&merged) {
            *slot = PortRange {
                lo: rule.lo,
                hi: rule.hi,
                protocols: rule.protocols,
                pad: [0; 3],
            };
        }
        match net {
            IpNet::V4(n) => entries.v4.push((
                Egress4Key {
                    prefixlen: 32 + u32::from(n.prefix_len()),
                    agent_index,
                    addr: n.network().octets(),
                },
                value,
            )),
            IpNet::V6(n) => entries.v6.push((
                Egress6Key {
                    prefixlen: 32 + u32::from(n.prefix_len()),
                    agent_index,
                    addr: n.network().octets(),
                },
                value,
            )),
        }
    }
    Ok(entries)
}

fn contains_net(outer: &IpNet, inner: &IpNet) -> bool {
    match (outer, inner) {
        (IpNet::V4(o), IpNet::V4(i)) => o.contains(i),
        (IpNet::V6(o), IpNet::V6(i)) => o.contains(i),
        _ => false,
    }
}

/// The fewest ranges that allow exactly what `rules` allow together: the port line is cut
/// at every range boundary, each piece gets the protocols of the rules covering it, and
/// neighbouring pieces with the same protocols join.
pub fn merge_ranges(rules: &[PortRule]) -> Vec<PortRule> {
    let mut cuts: Vec<u32> = rules
        .iter()
        .flat_map(|r| [u32::from(r.lo), u32::from(r.hi) + 1])
        .collect();
    cuts.sort_unstable();
    cuts.dedup();

    let mut merged: Vec<PortRule> = Vec::new();
    for pair in cuts.windows(2) {
        let (start, end) = (pair[0], pair[1] - 1);
        let protocols = rules
            .iter()
            .filter(|r| u32::from(r.lo) <= start && end <= u32::from(r.hi))
            .fold(0u8, |acc, r| acc | r.protocols);
        if protocols == 0 {
            continue;
        }
        // `start`, `end` come from u16 bounds, and `end` < 65536.
        let (lo, hi) = (start as u16, end as u16);
        match merged.last_mut() {
            Some(last) if last.protocols == protocols && u32::from(last.hi) + 1 == start => {
                last.hi = hi;
            }
            _ => merged.push(PortRule::new(lo, hi, protocols)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test network")
    }

    fn allow(network: &str, ports: &[PortRule]) -> EgressAllow {
        EgressAllow {
            network: net(network),
            ports: ports.to_vec(),
        }
    }

    fn ranges(v: &EgressValue) -> Vec<PortRule> {
        v.ranges[..v.n_ranges as usize]
            .iter()
            .map(|r| PortRule::new(r.lo, r.hi, r.protocols))
            .collect()
    }

    #[test]
    fn shorter_prefixes_push_their_ranges_into_longer_ones() {
        let e = compile_egress(
            7,
            &[
                allow("10.0.0.0/8", &[PortRule::tcp(443)]),
                allow("10.1.0.0/16", &[PortRule::tcp(80)]),
                allow("10.1.2.0/24", &[PortRule::udp(53)]),
                allow("192.168.0.0/16", &[PortRule::tcp(22)]),
            ],
        )
        .expect("compiles");
        assert_eq!(e.v4.len(), 4);
        assert!(e.v6.is_empty());
        let find = |addr: [u8; 4], len: u32| {
            e.v4.iter()
                .find(|(k, _)| k.addr == addr && k.prefixlen == 32 + len)
                .map(|(k, v)| {
                    assert_eq!(k.agent_index, 7);
                    ranges(v)
                })
                .expect("entry")
        };
        assert_eq!(find([10, 0, 0, 0], 8), vec![PortRule::tcp(443)]);
        assert_eq!(
            find([10, 1, 0, 0], 16),
            vec![PortRule::tcp(80), PortRule::tcp(443)]
        );
        assert_eq!(
            find([10, 1, 2, 0], 24),
            vec![PortRule::udp(53), PortRule::tcp(80), PortRule::tcp(443)]
        );
        // Not inside 10/8: nothing pushed down.
        assert_eq!(find([192, 168, 0, 0], 16), vec![PortRule::tcp(22)]);
    }

    #[test]
    fn host_bits_are_cleared_and_equal_networks_merge() {
        let e = compile_egress(
            1,
            &[
                allow("10.1.2.3/8", &[PortRule::tcp(1)]),
                allow("10.0.0.0/8", &[PortRule::tcp(2)]),
            ],
        )
        .expect("compiles");
        assert_eq!(e.v4.len(), 1);
        assert_eq!(e.v4[0].0.addr, [10, 0, 0, 0]);
        assert_eq!(ranges(&e.v4[0].1), vec![PortRule::new(1, 2, PROTO_TCP)]);
    }

    #[test]
    fn ipv4_mapped_networks_become_ipv4() {
        let e = compile_egress(
            3,
            &[
                allow("::ffff:127.0.0.0/104", &[PortRule::tcp(8080)]),
                allow("::/0", &[PortRule::tcp(443)]),
            ],
        )
        .expect("compiles");
        assert_eq!(e.v4.len(), 1);
        assert_eq!(e.v4[0].0.prefixlen, 32 + 8);
        assert_eq!(e.v4[0].0.addr, [127, 0, 0, 0]);
        // ::/0 stays IPv6 and is not pushed into the IPv4 entry.
        assert_eq!(ranges(&e.v4[0].1), vec![PortRule::tcp(8080)]);
        assert_eq!(e.v6.len(), 1);
        assert_eq!(e.v6[0].0.prefixlen, 32);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("addr");
        assert!(e.allows(mapped, 8080, PROTO_TCP));
        assert!(!e.allows(mapped, 443, PROTO_TCP));
        assert!(e.allows("2001:db8::1".parse().expect("addr"), 443, PROTO_TCP));
    }

    #[test]
    fn ranges_merge_by_protocol() {
        let merged = merge_ranges(&[
            PortRule::new(100, 200, PROTO_TCP),
            PortRule::new(150, 300, PROTO_TCP),
            PortRule::new(301, 400, PROTO_TCP),
            PortRule::new(53, 53, PROTO_UDP),
            PortRule::new(53, 53, PROTO_TCP),
            PortRule::new(180, 190, PROTO_UDP),
        ]);
        assert_eq!(
            merged,
            vec![
                PortRule::new(53, 53, PROTO_TCP | PROTO_UDP),
                PortRule::new(100, 179, PROTO_TCP),
                PortRule::new(180, 190, PROTO_TCP | PROTO_UDP),
                PortRule::new(191, 400, PROTO_TCP),
            ]
        );
        assert_eq!(
            merge_ranges(&[PortRule::any(), PortRule::tcp(443)]),
            vec![PortRule::any()]
        );
        assert_eq!(
            merge_ranges(&[PortRule::new(65535, 65535, PROTO_UDP)]),
            vec![PortRule::new(65535, 65535, PROTO_UDP)]
        );
    }

    #[test]
    fn too_many_ranges_and_bad_ranges_are_errors() {
        let ports: Vec<PortRule> = (0..17).map(|i| PortRule::tcp(i * 2)).collect();
        assert!(matches!(
            compile_egress(0, &[allow("10.0.0.0/8", &ports)]),
            Err(KernelError::TooManyPortRanges { count: 17, .. })
        ));
        assert!(matches!(
            compile_egress(0, &[allow("10.0.0.0/8", &[PortRule::new(5, 4, PROTO_TCP)])]),
            Err(KernelError::InvalidPortRange { lo: 5, hi: 4 })
        ));
        assert!(matches!(
            compile_egress(0, &[allow("10.0.0.0/8", &[PortRule::new(5, 5, 0)])]),
            Err(KernelError::NoProtocol { .. })
        ));
    }

    /// The longest-match entries allow exactly what "any entry of the list allows" does.
    #[test]
    fn longest_match_equals_union_of_rules() {
        let list = [
            allow("0.0.0.0/0", &[PortRule::udp(53)]),
            allow("10.0.0.0/8", &[PortRule::new(1000, 2000, PROTO_TCP)]),
            allow("10.1.0.0/16", &[PortRule::tcp(80)]),
            allow("10.1.2.0/24", &[PortRule::udp(5000)]),
            allow("10.1.2.3/32", &[PortRule::tcp(22)]),
            allow("10.2.0.0/15", &[PortRule::tcp(443)]),
            allow("2001:db8::/32", &[PortRule::tcp(443)]),
            allow("2001:db8:1::/48", &[PortRule::udp(443)]),
        ];
        let e = compile_egress(9, &list).expect("compiles");
        // A small deterministic generator: no test-only dependency needed.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let interesting_ports = [22u16, 53, 80, 443, 999, 1000, 1500, 2000, 2001, 5000, 8080];
        for i in 0..20_000 {
            let r = next();
            let addr: IpAddr = match i % 4 {
                0 => Ipv4Addr::new(
                    10,
                    (r % 4) as u8,
                    ((r >> 8) % 4) as u8,
                    ((r >> 16) % 5) as u8,
                )
                .into(),
                1 => Ipv4Addr::from((r >> 3) as u32).into(),
                2 => {
                    Ipv6Addr::new(0x2001, 0xdb8, (r % 3) as u16, 0, 0, 0, 0, (r >> 9) as u16).into()
                }
                _ => Ipv4Addr::new(10, 1, 2, (r % 8) as u8)
                    .to_ipv6_mapped()
                    .into(),
            };
            let port = interesting_ports[(r >> 40) as usize % interesting_ports.len()];
            let bit = if r & (1 << 50) == 0 {
                PROTO_TCP
            } else {
                PROTO_UDP
            };
            let canonical = canonical_addr(addr);
            let expected = list.iter().any(|a| {
                let n = canonical_net(a.network);
                n.contains(&canonical) && a.ports.iter().any(|p| p.contains(port, bit))
            });
            assert_eq!(
                e.allows(addr, port, bit),
                expected,
                "{addr} port {port} proto bit {bit}"
            );
        }
    }
}
