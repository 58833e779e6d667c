//! A set of rules compiled once for every agent: every path glob of every rule in one
//! [`GlobIndex`] (one walk over the path finds every rule it hits), likewise for binaries,
//! destinations by prefix and host name, and per action type the rules that depend on no
//! object. What differs between agents (workspace, home, which rules name them) is a
//! [`Binding`] given with each request, so adding agents adds no compiling. A decision visits
//! only the candidates.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use secops_common::{ActionId, RiskLevel, Verdict};

use crate::policy::pattern::{HostPattern, PathPattern, PortRange};
use crate::policy::{Rule, Selectors};

use super::globs::{Binding, GlobIndex, GlobScratch, Scope};
use super::ActionRequest;

pub struct CompiledRule {
    /// Index of the rule in the policy's rule list.
    pub policy_index: usize,
    pub id: Arc<str>,
    pub reason: Arc<str>,
    pub verdict: Option<Verdict>,
    pub risk: RiskLevel,
    /// The agents (engine indices, sorted) the rule names; `None`: every agent.
    scope: Option<Box<[u32]>>,
    own: NetSelectors,
    unless: Option<NetSelectors>,
}

impl CompiledRule {
    fn applies_to(&self, agent: Option<u32>) -> bool {
        match &self.scope {
            None => true,
            Some(agents) => agent.is_some_and(|a| agents.binary_search(&a).is_ok()),
        }
    }
}

/// Which selector kinds a rule (or its `unless`) has, and the network ones in full. Path and
/// binary globs live in the rule set's glob indexes.
struct NetSelectors {
    has_paths: bool,
    has_binaries: bool,
    cidrs: Vec<IpNet>,
    hosts: Vec<HostPattern>,
    ports: Vec<PortRange>,
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
    /// Per action id: rules for every agent with no path, binary or destination selector.
    unconditional: Vec<Vec<u32>>,
    /// Per action id: the same for rules that name agents, as (agent, rule), sorted.
    unconditional_scoped: Vec<Vec<(u32, u32)>>,
    /// Per action id: a bitset over rules that name the action.
    members: Vec<Vec<u64>>,
}

#[derive(Default)]
struct Scratch {
    globs: GlobScratch,
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

/// What a rule set is compiled against: the policy's agents and default homes.
pub struct Context<'a> {
    pub action_count: usize,
    /// Agent name → engine index.
    pub agents: &'a HashMap<String, super::AgentIdx>,
    pub default_homes: &'a [PathPattern],
}

impl RuleSet {
    /// Compiles `rules` (with their indices in the policy), once for every agent.
    pub fn compile<'r>(
        rules: impl Iterator<Item = (usize, &'r Rule)>,
        context: &Context<'_>,
    ) -> RuleSet {
        let action_count = context.action_count;
        let mut compiled = Vec::new();
        let mut paths = GlobIndex::new();
        let mut binaries = GlobIndex::new();
        let mut unless_paths = GlobIndex::new();
        let mut unless_binaries = GlobIndex::new();
        let mut unconditional = vec![Vec::new(); action_count];
        let mut unconditional_scoped = vec![Vec::new(); action_count];
        let mut destinations = DestinationIndex::default();
        let mut member_lists: Vec<Vec<u32>> = vec![Vec::new(); action_count];
        for (policy_index, rule) in rules {
            let idx = compiled.len() as u32;
            let scope: Option<Box<[u32]>> = rule.agents.as_ref().map(|names| {
                let mut agents: Vec<u32> = names
                    .iter()
                    .filter_map(|n| context.agents.get(n).map(|a| a.0))
                    .collect();
                agents.sort_unstable();
                agents.dedup();
                agents.into()
            });
            let scopes: Vec<Scope> = match &scope {
                None => vec![Scope::All],
                Some(agents) => agents.iter().map(|&a| Scope::Agent(a)).collect(),
            };
            let add = |patterns: &[PathPattern], into: &mut GlobIndex| {
                for pattern in patterns {
                    for &s in &scopes {
                        into.insert(pattern, idx, s, context.default_homes);
                    }
                }
            };
            add(&rule.selectors.paths, &mut paths);
            add(&rule.selectors.binaries, &mut binaries);
            if let Some(unless) = &rule.unless {
                add(&unless.paths, &mut unless_paths);
                add(&unless.binaries, &mut unless_binaries);
            }
            let own = NetSelectors::from(&rule.selectors);
            let by_destination = !own.has_paths
                && !own.has_binaries
                && (!own.cidrs.is_empty() || !own.hosts.is_empty());
            if by_destination {
                destinations.insert(&rule.selectors, idx);
            }
            for &action in &rule.actions {
                let a = action.index();
                if a >= action_count {
                    continue;
                }
                member_lists[a].push(idx);
                if !own.has_paths && !own.has_binaries && !by_destination {
                    for &s in &scopes {
                        match s {
                            Scope::All => unconditional[a].push(idx),
                            Scope::Agent(agent) => unconditional_scoped[a].push((agent, idx)),
                        }
                    }
                }
            }
            compiled.push(CompiledRule {
                policy_index,
                id: Arc::from(rule.id.as_str()),
                reason: Arc::from(rule.reason.as_str()),
                verdict: rule.verdict,
                risk: rule.risk,
                scope,
                own,
                unless: rule.unless.as_ref().map(NetSelectors::from),
            });
        }
        for list in &mut unconditional_scoped {
            list.sort_unstable();
        }
        for index in [
            &mut paths,
            &mut binaries,
            &mut unless_paths,
            &mut unless_binaries,
        ] {
            index.finish();
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
            paths,
            binaries,
            unless_paths,
            unless_binaries,
            destinations,
            unconditional,
            unconditional_scoped,
            members,
        }
    }

    fn is_member(&self, action: ActionId, rule: u32) -> bool {
        self.members
            .get(action.index())
            .and_then(|bits| bits.get(rule as usize / 64))
            .is_some_and(|word| word & (1 << (rule % 64)) != 0)
    }

    /// Calls `on_match` with every rule that matches `request` for the agent `binding`
    /// describes, in policy order.
    pub fn for_each_match<'s>(
        &'s self,
        request: &ActionRequest<'_>,
        binding: &Binding<'_>,
        mut on_match: impl FnMut(&'s CompiledRule),
    ) {
        let action = request.action.index();
        let Some(unconditional) = self.unconditional.get(action) else {
            return;
        };
        let agent = binding.agent;
        SCRATCH.with(|scratch| {
            let mut guard = scratch.borrow_mut();
            let s = &mut *guard;
            let path = request.path.map(|p| p.as_str());
            let binary = request.binary.map(|b| b.as_str());
            match path {
                Some(p) => self.paths.hits(p, binding, &mut s.globs, &mut s.path_hits),
                None => s.path_hits.clear(),
            }
            match binary {
                Some(b) => self
                    .binaries
                    .hits(b, binding, &mut s.globs, &mut s.binary_hits),
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
            if let (Some(agent), Some(scoped)) = (agent, self.unconditional_scoped.get(action)) {
                let from = scoped.partition_point(|&(a, _)| a < agent);
                s.candidates.extend(
                    scoped[from..]
                        .iter()
                        .take_while(|&&(a, _)| a == agent)
                        .map(|&(_, r)| r),
                );
            }
            s.candidates.sort_unstable();
            s.candidates.dedup();

            let mut unless_computed = false;
            for i in 0..s.candidates.len() {
                let r = s.candidates[i];
                let rule = &self.rules[r as usize];
                if !rule.applies_to(agent)
                    || !rule.own.matches(r, request, &s.path_hits, &s.binary_hits)
                {
                    continue;
                }
                if let Some(unless) = &rule.unless {
                    if !unless_computed && (unless.has_paths || unless.has_binaries) {
                        match path {
                            Some(p) => self.unless_paths.hits(
                                p,
                                binding,
                                &mut s.globs,
                                &mut s.unless_path_hits,
                            ),
                            None => s.unless_path_hits.clear(),
                        }
                        match binary {
                            Some(b) => self.unless_binaries.hits(
                                b,
                                binding,
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
