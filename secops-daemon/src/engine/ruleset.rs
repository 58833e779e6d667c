//! A set of rules compiled for one agent: every path glob of every rule in one GlobSet (one
//! pass over the path finds every rule it hits), likewise for binaries, and per action type
//! the rules that do not depend on a path or binary. A decision visits only the candidates.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use globset::{Candidate, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use secops_common::{ActionId, RiskLevel, Verdict};

use crate::policy::pattern::{compile_glob, HostPattern, PathPattern, PortRange};
use crate::policy::{Rule, Selectors};

use super::ActionRequest;

/// The concrete values `~` and `${workspace}` stand for in one agent's rules.
pub struct Expansion<'a> {
    pub homes: &'a [String],
    pub workspace: Option<&'a str>,
}

pub struct CompiledRule {
    /// Index of the rule in the policy's rule list.
    pub policy_index: usize,
    pub id: Arc<str>,
    pub reason: Arc<str>,
    pub verdict: Option<Verdict>,
    pub risk: RiskLevel,
    own: NetSelectors,
    unless: Option<NetSelectors>,
}

/// Which selector kinds a rule (or its `unless`) has, and the network ones in full. Path and
/// binary globs live in the rule set's GlobSets.
struct NetSelectors {
    has_paths: bool,
    has_binaries: bool,
    cidrs: Vec<IpNet>,
    hosts: Vec<HostPattern>,
    ports: Vec<PortRange>,
}

/// One GlobSet over the globs of many rules, and which rule each glob belongs to.
struct GlobIndex {
    set: GlobSet,
    owner: Vec<u32>,
}

impl GlobIndex {
    fn build(entries: Vec<(String, u32)>) -> GlobIndex {
        let mut builder = GlobSetBuilder::new();
        let mut owner = Vec::with_capacity(entries.len());
        for (glob, rule) in entries {
            // The patterns were checked when the policy loaded, and expansion only puts
            // checked, glob-free directories in front of them.
            if let Ok(glob) = compile_glob(&glob) {
                builder.add(glob);
                owner.push(rule);
            }
        }
        let set = builder.build().unwrap_or_else(|_| GlobSet::empty());
        GlobIndex { set, owner }
    }

    /// The rules (sorted, unique) that have a glob matching `candidate`.
    fn hits(&self, candidate: &Candidate<'_>, scratch: &mut Vec<usize>, out: &mut Vec<u32>) {
        out.clear();
        if self.owner.is_empty() {
            return;
        }
        self.set.matches_candidate_into(candidate, scratch);
        out.extend(scratch.iter().map(|&g| self.owner[g]));
        out.sort_unstable();
        out.dedup();
    }
}

/// Rules with network destinations, by destination: per prefix length a hash of networks,
/// and host names exact or by wildcard suffix. A lookup costs one hash probe per distinct
/// prefix length and per label of the host name, however many rules there are.
#[derive(Default)]
struct DestinationIndex {
    v4: Vec<(u8, HashMap<u32, Vec<u32>>)>,
    v6: Vec<(u8, HashMap<u128, Vec<u32>>)>,
    exact_hosts: HashMap<String, Vec<u32>>,
    wildcard_hosts: HashMap<String, Vec<u32>>,
}

fn mask_v4(addr: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(addr: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl DestinationIndex {
    fn insert(&mut self, selectors: &Selectors, rule: u32) {
        for net in &selectors.cidrs {
            match net {
                IpNet::V4(n) => {
                    let prefix = n.prefix_len();
                    let slot = position_or_push(&mut self.v4, prefix);
                    slot.entry(mask_v4(u32::from(n.network()), prefix))
                        .or_default()
                        .push(rule);
                }
                IpNet::V6(n) => {
                    let prefix = n.prefix_len();
                    let slot = position_or_push(&mut self.v6, prefix);
                    slot.entry(mask_v6(u128::from(n.network()), prefix))
                        .or_default()
                        .push(rule);
                }
            }
        }
        for host in &selectors.hosts {
            let (wildcard, key) = host.index_key();
            let map = if wildcard {
                &mut self.wildcard_hosts
            } else {
                &mut self.exact_hosts
            };
            map.entry(key.to_owned()).or_default().push(rule);
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty()
            && self.v6.is_empty()
            && self.exact_hosts.is_empty()
            && self.wildcard_hosts.is_empty()
    }

    fn candidates(
        &self,
        addr: Option<IpAddr>,
        host: Option<&str>,
        lowered: &mut String,
        out: &mut Vec<u32>,
    ) {
        match addr {
            Some(IpAddr::V4(a)) => {
                let a = u32::from(a);
                for (prefix, map) in &self.v4 {
                    out.extend(map.get(&mask_v4(a, *prefix)).into_iter().flatten());
                }
            }
            Some(IpAddr::V6(a)) => {
                let a = u128::from(a);
                for (prefix, map) in &self.v6 {
                    out.extend(map.get(&mask_v6(a, *prefix)).into_iter().flatten());
                }
            }
            None => {}
        }
        if let Some(host) = host {
            lowered.clear();
            lowered.push_str(host.trim_end_matches('.'));
            lowered.make_ascii_lowercase();
            out.extend(self.exact_hosts.get(lowered.as_str()).into_iter().flatten());
            let mut rest = lowered.as_str();
            while let Some((_, suffix)) = rest.split_once('.') {
                out.extend(self.wildcard_hosts.get(suffix).into_iter().flatten());
                rest = suffix;
            }
        }
    }
}

fn position_or_push<V: Default>(slots: &mut Vec<(u8, V)>, prefix: u8) -> &mut V {
    let i = match slots.iter().position(|(p, _)| *p == prefix) {
        Some(i) => i,
        None => {
            slots.push((prefix, V::default()));
            slots.len() - 1
        }
    };
    &mut slots[i].1
}

pub struct RuleSet {
    pub rules: Vec<CompiledRule>,
    paths: GlobIndex,
    binaries: GlobIndex,
    unless_paths: GlobIndex,
    unless_binaries: GlobIndex,
    /// Rules whose destination selectors (cidrs/hosts) decide whether they are candidates.
    destinations: DestinationIndex,
    /// Per action id: rules with no path, binary or destination selector.
    unconditional: Vec<Vec<u32>>,
    /// Per action id: a bitset over rules that name the action.
    members: Vec<Vec<u64>>,
}

#[derive(Default)]
struct Scratch {
    globs: Vec<usize>,
    path_hits: Vec<u32>,
    binary_hits: Vec<u32>,
    unless_path_hits: Vec<u32>,
    unless_binary_hits: Vec<u32>,
    candidates: Vec<u32>,
    lowered_host: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl RuleSet {
    /// Compiles `rules` (with their indices in the policy) for one agent.
    pub fn compile<'r>(
        rules: impl Iterator<Item = (usize, &'r Rule)>,
        action_count: usize,
        expansion: &Expansion<'_>,
    ) -> RuleSet {
        let mut compiled = Vec::new();
        let (mut paths, mut binaries, mut unless_paths, mut unless_binaries) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut unconditional = vec![Vec::new(); action_count];
        let mut destinations = DestinationIndex::default();
        let mut member_lists: Vec<Vec<u32>> = vec![Vec::new(); action_count];
        for (policy_index, rule) in rules {
            let idx = compiled.len() as u32;
            let expand = |patterns: &[PathPattern], into: &mut Vec<(String, u32)>| {
                for pattern in patterns {
                    into.extend(
                        pattern
                            .expand(expansion.homes, expansion.workspace)
                            .into_iter()
                            .map(|g| (g, idx)),
                    );
                }
            };
            expand(&rule.selectors.paths, &mut paths);
            expand(&rule.selectors.binaries, &mut binaries);
            if let Some(unless) = &rule.unless {
                expand(&unless.paths, &mut unless_paths);
                expand(&unless.binaries, &mut unless_binaries);
            }
            let own = NetSelectors::from(&rule.selectors);
            let by_destination = !own.has_paths
                && !own.has_binaries
                && (!own.cidrs.is_empty() || !own.hosts.is_empty());
            if by_destination {
                destinations.insert(&rule.selectors, idx);
            }
            for &action in &rule.actions {
                if let Some(list) = member_lists.get_mut(action.index()) {
                    list.push(idx);
                    if !own.has_paths && !own.has_binaries && !by_destination {
                        unconditional[action.index()].push(idx);
                    }
                }
            }
            compiled.push(CompiledRule {
                policy_index,
                id: Arc::from(rule.id.as_str()),
                reason: Arc::from(rule.reason.as_str()),
                verdict: rule.verdict,
                risk: rule.risk,
                own,
                unless: rule.unless.as_ref().map(NetSelectors::from),
            });
        }
        let words_needed = compiled.len().div_ceil(64).max(1);
        let members = member_lists
            .into_iter()
            .map(|list| {
                let mut bits = vec![0u64; words_needed];
                for r in list {
                    bits[r as usize / 64] |= 1 << (r % 64);
                }
                bits
            })
            .collect();
        RuleSet {
            rules: compiled,
            paths: GlobIndex::build(paths),
            binaries: GlobIndex::build(binaries),
            unless_paths: GlobIndex::build(unless_paths),
            unless_binaries: GlobIndex::build(unless_binaries),
            destinations,
            unconditional,
            members,
        }
    }

    fn is_member(&self, action: ActionId, rule: u32) -> bool {
        self.members
            .get(action.index())
            .and_then(|bits| bits.get(rule as usize / 64))
            .is_some_and(|word| word & (1 << (rule % 64)) != 0)
    }

    /// Calls `on_match` with every rule that matches `request`, in policy order.
    pub fn for_each_match<'s>(
        &'s self,
        request: &ActionRequest<'_>,
        mut on_match: impl FnMut(&'s CompiledRule),
    ) {
        let Some(unconditional) = self.unconditional.get(request.action.index()) else {
            return;
        };
        SCRATCH.with(|scratch| {
            let mut guard = scratch.borrow_mut();
            let s = &mut *guard;
            let path = request.path.map(|p| Candidate::new(p.as_str()));
            let binary = request.binary.map(|b| Candidate::new(b.as_str()));
            match &path {
                Some(c) => self.paths.hits(c, &mut s.globs, &mut s.path_hits),
                None => s.path_hits.clear(),
            }
            match &binary {
                Some(c) => self.binaries.hits(c, &mut s.globs, &mut s.binary_hits),
                None => s.binary_hits.clear(),
            }
            s.candidates.clear();
            s.candidates
                .extend(s.path_hits.iter().chain(&s.binary_hits).copied());
            if !self.destinations.is_empty() {
                self.destinations.candidates(
                    request.addr,
                    request.host,
                    &mut s.lowered_host,
                    &mut s.candidates,
                );
            }
            s.candidates.retain(|&r| self.is_member(request.action, r));
            s.candidates.extend_from_slice(unconditional);
            s.candidates.sort_unstable();
            s.candidates.dedup();

            let mut unless_computed = false;
            for i in 0..s.candidates.len() {
                let r = s.candidates[i];
                let rule = &self.rules[r as usize];
                if !rule.own.matches(r, request, &s.path_hits, &s.binary_hits) {
                    continue;
                }
                if let Some(unless) = &rule.unless {
                    if !unless_computed && (unless.has_paths || unless.has_binaries) {
                        match &path {
                            Some(c) => {
                                self.unless_paths
                                    .hits(c, &mut s.globs, &mut s.unless_path_hits)
                            }
                            None => s.unless_path_hits.clear(),
                        }
                        match &binary {
                            Some(c) => self.unless_binaries.hits(
                                c,
                                &mut s.globs,
                                &mut s.unless_binary_hits,
                            ),
                            None => s.unless_binary_hits.clear(),
                        }
                        unless_computed = true;
                    }
                    if unless.matches(r, request, &s.unless_path_hits, &s.unless_binary_hits) {
                        continue;
                    }
                }
                on_match(rule);
            }
        });
    }
}

impl From<&Selectors> for NetSelectors {
    fn from(s: &Selectors) -> Self {
        NetSelectors {
            has_paths: !s.paths.is_empty(),
            has_binaries: !s.binaries.is_empty(),
            cidrs: s.cidrs.clone(),
            hosts: s.hosts.clone(),
            ports: s.ports.clone(),
        }
    }
}

impl NetSelectors {
    /// Every kind the selectors have must match. `cidrs` and `hosts` together name one
    /// destination, so either may match it.
    fn matches(
        &self,
        rule: u32,
        request: &ActionRequest<'_>,
        path_hits: &[u32],
        binary_hits: &[u32],
    ) -> bool {
        if self.has_paths && path_hits.binary_search(&rule).is_err() {
            return false;
        }
        if self.has_binaries && binary_hits.binary_search(&rule).is_err() {
            return false;
        }
        if !self.cidrs.is_empty() || !self.hosts.is_empty() {
            let by_addr = request
                .addr
                .is_some_and(|a: IpAddr| self.cidrs.iter().any(|n| n.contains(&a)));
            let by_host = request
                .host
                .is_some_and(|h| self.hosts.iter().any(|p| p.matches(h)));
            if !by_addr && !by_host {
                return false;
            }
        }
        if !self.ports.is_empty()
            && !request
                .port
                .is_some_and(|p| self.ports.iter().any(|r| r.contains(p)))
        {
            return false;
        }
        true
    }
}
