//! Names gate addresses: what the answers of secops' resolver let each agent connect to, as
//! `secops_egress_names` entries. An address is allowed for an agent only because a name its
//! allowlist allows resolved to it *for that agent*, for that name's ports, until the answer's
//! TTL (clamped) runs out; the kernel checks each range's expiry itself.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use secops_common::kernel::{NameKey, NameValue, PortRange, MAX_PORT_RANGES};

use crate::kernel::PortRule;

/// How long an answer allows its addresses, whatever its TTL says: a TTL of 0 must still let
/// the connect that follows the lookup through, and an address must not stay allowed for a
/// day because an upstream said so.
pub(crate) const MIN_NAME_TTL: Duration = Duration::from_secs(5);
pub(crate) const MAX_NAME_TTL: Duration = Duration::from_secs(3600);

/// The TTL an answer is held to, in seconds.
pub(crate) fn clamp_ttl(ttl_secs: u32) -> Duration {
    Duration::from_secs(u64::from(ttl_secs)).clamp(MIN_NAME_TTL, MAX_NAME_TTL)
}

/// One name's claim on an address: its ports, until when (`CLOCK_BOOTTIME` ns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NameGrant {
    pub(crate) ports: Vec<PortRule>,
    pub(crate) expires_ns: u64,
}

/// A change to make in the kernel: write the entry, or (`None`) remove it.
pub(crate) type NameChange = (NameKey, Option<NameValue>);

/// Every address a name resolved to, per agent, with the names behind it.
#[derive(Debug, Default)]
pub(crate) struct ResolvedNames {
    by_addr: HashMap<(u32, IpAddr), Claims>,
}

/// The names claiming one address, and the kernel entry last written for them.
#[derive(Debug, Default)]
struct Claims {
    names: BTreeMap<String, NameGrant>,
    written: NameValue,
}

/// How much earlier than a name's own expiry the kernel's entry may end: a cached answer's
/// age is counted in whole seconds, so asking for it again computes an expiry up to a second
/// later than the one written; and a stream of new names on one address (a CDN) would
/// otherwise rewrite the entry on every answer.
const EXPIRY_SLACK_NS: u64 = 1_000_000_000;

impl Claims {
    /// Whether the written entry already allows `grant`'s ports for as long (within the slack).
    fn covers(&self, grant: &NameGrant) -> bool {
        let v = &self.written;
        let n = (v.n_ranges as usize).min(MAX_PORT_RANGES);
        grant.ports.iter().all(|rule| {
            (0..n).any(|i| {
                let r = &v.ranges[i];
                (r.lo, r.hi, r.protocols) == (rule.lo, rule.hi, rule.protocols)
                    && v.expires_ns[i].saturating_add(EXPIRY_SLACK_NS) >= grant.expires_ns
            })
        })
    }

    fn rewrite(&mut self) -> NameValue {
        self.written = kernel_value(&self.names);
        self.written
    }
}

impl ResolvedNames {
    /// Records that `name` resolved to `addr` for agent `agent`. Returns the entry to write,
    /// or `None` when the kernel's entry already allows as much for as long (within
    /// [`EXPIRY_SLACK_NS`]), so a cached answer asked for again, or another name on an
    /// address already allowed, costs no map update (and no pass over the address's names).
    pub(crate) fn insert(
        &mut self,
        agent: u32,
        addr: IpAddr,
        name: &str,
        grant: NameGrant,
    ) -> Option<NameChange> {
        let addr = addr.to_canonical();
        let claims = self.by_addr.entry((agent, addr)).or_default();
        let covered = claims.covers(&grant);
        match claims.names.get_mut(name) {
            Some(old) if old.ports == grant.ports => {
                old.expires_ns = old.expires_ns.max(grant.expires_ns);
            }
            _ => {
                claims.names.insert(name.to_owned(), grant);
            }
        }
        if covered {
            return None;
        }
        Some((name_key(agent, addr), Some(claims.rewrite())))
    }

    /// Forgets the names that expired by `now_ns`; the entries to rewrite or remove.
    pub(crate) fn sweep(&mut self, now_ns: u64) -> Vec<NameChange> {
        self.retain(|_, _, grant| grant.expires_ns > now_ns)
    }

    /// After the policy changed: `ports_of(agent, name)` gives each name's ports now (`None`:
    /// the name is no longer allowed). The entries to rewrite or remove.
    pub(crate) fn reconcile(
        &mut self,
        ports_of: impl Fn(u32, &str) -> Option<Vec<PortRule>>,
    ) -> Vec<NameChange> {
        let mut changes = Vec::new();
        self.by_addr.retain(|&(agent, addr), claims| {
            let before = claims.names.clone();
            claims
                .names
                .retain(|name, grant| match ports_of(agent, name) {
                    Some(ports) if !ports.is_empty() => {
                        grant.ports = ports;
                        true
                    }
                    _ => false,
                });
            if claims.names != before {
                let value = (!claims.names.is_empty()).then(|| claims.rewrite());
                changes.push((name_key(agent, addr), value));
            }
            !claims.names.is_empty()
        });
        changes
    }

    fn retain(&mut self, keep: impl Fn(u32, &str, &NameGrant) -> bool) -> Vec<NameChange> {
        let mut changes = Vec::new();
        self.by_addr.retain(|&(agent, addr), claims| {
            let before = claims.names.len();
            claims.names.retain(|name, grant| keep(agent, name, grant));
            if claims.names.len() != before {
                let value = (!claims.names.is_empty()).then(|| claims.rewrite());
                changes.push((name_key(agent, addr), value));
            }
            !claims.names.is_empty()
        });
        changes
    }

    /// Addresses held, over all agents.
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }
}

/// The kernel's key for an agent's address (IPv4-mapped as IPv4).
pub(crate) fn name_key(agent: u32, addr: IpAddr) -> NameKey {
    let (family, addr) = super::kernel_addr(addr);
    NameKey {
        agent_index: agent,
        family,
        pad: 0,
        addr,
    }
}

/// One entry for every name's claim on an address: each distinct port rule with the latest
/// expiry any name gives it. Past the kernel's range count, the rules that run out first are
/// left out (allowing less, never more).
fn kernel_value(names: &BTreeMap<String, NameGrant>) -> NameValue {
    let mut latest: BTreeMap<PortRule, u64> = BTreeMap::new();
    for grant in names.values() {
        for rule in &grant.ports {
            let e = latest.entry(*rule).or_default();
            *e = (*e).max(grant.expires_ns);
        }
    }
    let mut rules: Vec<(PortRule, u64)> = latest.into_iter().collect();
    rules.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    rules.truncate(MAX_PORT_RANGES);
    let mut value = NameValue {
        n_ranges: rules.len() as u32,
        ..NameValue::default()
    };
    for (i, (rule, expires)) in rules.into_iter().enumerate() {
        value.ranges[i] = PortRange {
            lo: rule.lo,
            hi: rule.hi,
            protocols: rule.protocols,
            pad: [0; 3],
        };
        value.expires_ns[i] = expires;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(ports: &[u16], expires_ns: u64) -> NameGrant {
        NameGrant {
            ports: ports.iter().map(|&p| PortRule::tcp(p)).collect(),
            expires_ns,
        }
    }

    fn ranges(v: &NameValue) -> Vec<(u16, u64)> {
        (0..v.n_ranges as usize)
            .map(|i| (v.ranges[i].lo, v.expires_ns[i]))
            .collect()
    }

    #[test]
    fn two_names_on_one_address_keep_their_own_ports_and_expiries() {
        let mut names = ResolvedNames::default();
        let addr: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let (key, value) = names
            .insert(3, addr, "api.test", grant(&[443], 100))
            .unwrap();
        assert_eq!(
            (key.agent_index, key.family),
            (3, secops_common::kernel::AF_INET)
        );
        assert_eq!(&key.addr[..4], &[10, 0, 0, 1]);
        assert_eq!(ranges(&value.unwrap()), [(443, 100)]);
        let (_, value) = names
            .insert(
                3,
                "10.0.0.1".parse().unwrap(),
                "www.test",
                grant(&[80, 443], 50),
            )
            .unwrap();
        // 443 lasts as long as the longer of the two names, 80 only as long as www.test.
        assert_eq!(ranges(&value.unwrap()), [(443, 100), (80, 50)]);
        assert_eq!(names.len(), 1, "one address");

        let swept = names.sweep(60);
        assert_eq!(swept.len(), 1);
        assert_eq!(ranges(swept[0].1.as_ref().unwrap()), [(443, 100)]);
        let swept = names.sweep(100);
        assert!(swept[0].1.is_none(), "removed once every name ran out");
        assert_eq!(names.len(), 0);
    }

    #[test]
    fn the_same_answer_again_writes_nothing_unless_it_lasts_longer() {
        let mut names = ResolvedNames::default();
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(names
            .insert(1, addr, "a.test", grant(&[443], 5_000_000_000))
            .is_some());
        assert!(names
            .insert(1, addr, "a.test", grant(&[443], 5_500_000_000))
            .is_none());
        assert!(names
            .insert(1, addr, "a.test", grant(&[443], 7_000_000_000))
            .is_some());
        // Another agent's address is its own entry.
        let (key, _) = names.insert(2, addr, "a.test", grant(&[443], 1)).unwrap();
        assert_eq!(key.agent_index, 2);
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn another_name_on_an_address_already_allowed_writes_nothing_until_it_is_needed() {
        let mut names = ResolvedNames::default();
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        let s = 1_000_000_000;
        assert!(names
            .insert(1, addr, "a.cdn.test", grant(&[443], 10 * s))
            .is_some());
        // Same ports, (nearly) no later: the kernel's entry already allows it.
        assert!(names
            .insert(1, addr, "b.cdn.test", grant(&[443], 10 * s + s / 2))
            .is_none());
        // Another port is not covered.
        let (_, value) = names
            .insert(1, addr, "c.cdn.test", grant(&[80], 3 * s))
            .unwrap();
        assert_eq!(
            ranges(&value.unwrap()),
            [(443, 10 * s + s / 2), (80, 3 * s)]
        );
        // When a.cdn.test (and c's port 80) expire, b.cdn.test's own expiry keeps 443.
        let swept = names.sweep(10 * s);
        assert_eq!(swept.len(), 1);
        assert_eq!(
            ranges(swept[0].1.as_ref().unwrap()),
            [(443, 10 * s + s / 2)]
        );
    }

    #[test]
    fn a_policy_change_rewrites_ports_and_drops_names_no_longer_allowed() {
        let mut names = ResolvedNames::default();
        names.insert(
            1,
            "10.0.0.1".parse().unwrap(),
            "keep.test",
            grant(&[443], 9),
        );
        names.insert(
            1,
            "10.0.0.2".parse().unwrap(),
            "drop.test",
            grant(&[443], 9),
        );
        let changes =
            names.reconcile(|_, name| (name == "keep.test").then(|| vec![PortRule::tcp(8443)]));
        assert_eq!(changes.len(), 2);
        let kept = changes.iter().find_map(|(_, v)| v.as_ref()).unwrap();
        assert_eq!(ranges(kept), [(8443, 9)]);
        assert_eq!(changes.iter().filter(|(_, v)| v.is_none()).count(), 1);
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn past_the_kernels_range_count_the_soonest_to_expire_are_left_out() {
        let mut names = ResolvedNames::default();
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        let mut last = None;
        for i in 0..20u16 {
            last = names.insert(
                1,
                addr,
                &format!("n{i}.test"),
                grant(&[1000 + i], u64::from(i)),
            );
        }
        let value = last.unwrap().1.unwrap();
        assert_eq!(value.n_ranges as usize, MAX_PORT_RANGES);
        assert!(ranges(&value).iter().all(|&(port, _)| port >= 1004));
    }

    #[test]
    fn ttls_are_clamped() {
        assert_eq!(clamp_ttl(0), MIN_NAME_TTL);
        assert_eq!(clamp_ttl(60), Duration::from_secs(60));
        assert_eq!(clamp_ttl(86_400), MAX_NAME_TTL);
    }
}
