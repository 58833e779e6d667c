//! The path (or binary) globs of every rule, compiled once per policy into tries of path
//! components, and matched by walking the path's components through them.
//!
//! A trie node holds its children by literal name (one hash lookup), by name pattern (indexed
//! by literal prefix or suffix, so `*.ext1` … `*.ext10000` cost one walk over the name's
//! bytes, not a test per pattern), and by `**` (a node that stays active for every later
//! component). A lookup visits each component once per active node, so its cost grows with
//! the path and the few nodes it reaches, not with the number of rules; and nothing is
//! compiled that could fail to build, whatever the number of rules.
//!
//! Four tries, so that what differs between agents is bound at decision time instead of
//! being compiled again for each: absolute globs; `~` globs under each default home (for
//! agents without a `home` of their own and for processes of no agent); and `~` and
//! `${workspace}` globs relative to the agent's own home and workspace, matched on what
//! follows that directory in the path.

use std::collections::HashMap;

use crate::policy::glob::{Component, Components, NamePattern};
use crate::policy::pattern::{PathPattern, PatternBase};

type Hasher = foldhash::fast::RandomState;

/// Which agents a glob's rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    /// One agent, by engine index; rules naming several agents are inserted once for each.
    Agent(u32),
}

/// Rules that match where a glob ends.
#[derive(Default)]
struct Accept {
    all: Vec<u32>,
    /// (agent, rule), sorted.
    by_agent: Vec<(u32, u32)>,
}

impl Accept {
    fn add(&mut self, value: u32, scope: Scope) {
        match scope {
            Scope::All => self.all.push(value),
            Scope::Agent(a) => self.by_agent.push((a, value)),
        }
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.by_agent.is_empty()
    }

    fn collect(&self, agent: Option<u32>, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.all);
        if let (Some(agent), false) = (agent, self.by_agent.is_empty()) {
            let from = self.by_agent.partition_point(|&(a, _)| a < agent);
            out.extend(
                self.by_agent[from..]
                    .iter()
                    .take_while(|&&(a, _)| a == agent)
                    .map(|&(_, v)| v),
            );
        }
    }

    fn finish(&mut self) {
        self.all.sort_unstable();
        self.all.dedup();
        self.by_agent.sort_unstable();
        self.by_agent.dedup();
        self.all.shrink_to_fit();
        self.by_agent.shrink_to_fit();
    }
}

#[derive(Default)]
struct Node {
    literals: HashMap<Box<[u8]>, u32, Hasher>,
    names: NameIndex,
    /// The node a `**` here leads to.
    recursive: Option<u32>,
    /// Reached by `**`: stays active for every later component.
    is_loop: bool,
    /// Globs that end here.
    accept: Accept,
    /// Globs that end here with a trailing `**`: they need at least one more component.
    accept_below: Accept,
}

/// Children by name pattern.
#[derive(Default)]
struct NameIndex {
    patterns: Vec<(NamePattern, u32)>,
    /// `*`: every name.
    any: Vec<u32>,
    by_prefix: ByteTrie,
    by_suffix: ByteTrie,
    /// Patterns with no literal prefix or suffix (`*a*`, `?x?`), tested one by one.
    other: Vec<u32>,
    /// While building: pattern → its place in `patterns`.
    building: HashMap<NamePattern, u32, Hasher>,
}

impl NameIndex {
    fn child(&mut self, pattern: &NamePattern, new_node: impl FnOnce() -> u32) -> u32 {
        if let Some(&i) = self.building.get(pattern) {
            return self.patterns[i as usize].1;
        }
        let node = new_node();
        let i = self.patterns.len() as u32;
        self.patterns.push((pattern.clone(), node));
        self.building.insert(pattern.clone(), i);
        let (prefix, suffix) = (pattern.literal_prefix(), pattern.literal_suffix());
        if pattern.is_any_name() {
            self.any.push(node);
        } else if !prefix.is_empty() && prefix.len() >= suffix.len() {
            self.by_prefix.insert(prefix.iter().copied(), i);
        } else if !suffix.is_empty() {
            self.by_suffix.insert(suffix.iter().rev().copied(), i);
        } else {
            self.other.push(i);
        }
        node
    }

    fn finish(&mut self) {
        self.building = HashMap::default();
        self.patterns.shrink_to_fit();
    }

    fn for_each_match(&self, name: &[u8], mut f: impl FnMut(u32)) {
        if self.patterns.is_empty() {
            return;
        }
        for &node in &self.any {
            f(node);
        }
        let mut check = |i: u32| {
            let (pattern, node) = &self.patterns[i as usize];
            if pattern.matches(name) {
                f(*node);
            }
        };
        self.by_prefix.walk(name.iter().copied(), &mut check);
        self.by_suffix.walk(name.iter().rev().copied(), &mut check);
        for &i in &self.other {
            check(i);
        }
    }
}

/// Literal prefixes (or reversed suffixes) → the patterns that have them.
#[derive(Default)]
struct ByteTrie {
    /// Node 0 is the root (the empty string, which holds no entries).
    nodes: Vec<ByteNode>,
}

#[derive(Default)]
struct ByteNode {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    entries: Vec<u32>,
}

impl ByteTrie {
    fn insert(&mut self, key: impl Iterator<Item = u8>, entry: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(ByteNode::default());
        }
        let mut at = 0usize;
        for b in key {
            let children = &self.nodes[at].children;
            at = match children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes[at].children.insert(i, (b, next as u32));
                    self.nodes.push(ByteNode::default());
                    next
                }
            };
        }
        self.nodes[at].entries.push(entry);
    }

    /// Calls `f` with the entries of every key that is a prefix of `bytes`.
    fn walk(&self, bytes: impl Iterator<Item = u8>, f: &mut impl FnMut(u32)) {
        if self.nodes.is_empty() {
            return;
        }
        let mut at = 0usize;
        for b in bytes {
            let children = &self.nodes[at].children;
            match children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => at = children[i].1 as usize,
                Err(_) => return,
            }
            for &e in &self.nodes[at].entries {
                f(e);
            }
        }
    }
}

/// One trie of component globs.
pub struct Trie {
    nodes: Vec<Node>,
    /// Absolute globs: the path `/` is also tried as one empty name (`/*` matches it).
    absolute: bool,
}

/// Per-thread buffers for walking tries.
#[derive(Default)]
pub struct WalkScratch {
    active: Vec<u32>,
    next: Vec<u32>,
    /// `seen[node] == stamp`: already in `next`.
    seen: Vec<u32>,
    stamp: u32,
}

impl WalkScratch {
    fn new_step(&mut self, nodes: usize) {
        if self.seen.len() < nodes {
            self.seen.resize(nodes, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.seen.fill(0);
            self.stamp = 1;
        }
    }
}

impl Trie {
    fn new(absolute: bool) -> Trie {
        Trie {
            nodes: vec![Node::default()],
            absolute,
        }
    }

    fn is_empty(&self) -> bool {
        let root = &self.nodes[0];
        self.nodes.len() == 1 && root.accept.is_empty() && root.accept_below.is_empty()
    }

    fn insert(&mut self, components: &[Component], value: u32, scope: Scope) {
        if self.absolute && components == [Component::Recursive] {
            // `/**`: every path, `/` included.
            self.nodes[0].accept.add(value, scope);
            self.nodes[0].accept_below.add(value, scope);
            return;
        }
        let mut at = 0usize;
        for (i, component) in components.iter().enumerate() {
            let last = i + 1 == components.len();
            at = match component {
                Component::Recursive if last => {
                    self.nodes[at].accept_below.add(value, scope);
                    return;
                }
                Component::Recursive => match self.nodes[at].recursive {
                    Some(next) => next as usize,
                    None => {
                        let next = self.push_node(true);
                        self.nodes[at].recursive = Some(next);
                        next as usize
                    }
                },
                Component::Literal(name) => match self.nodes[at].literals.get(name) {
                    Some(&next) => next as usize,
                    None => {
                        let next = self.push_node(false);
                        self.nodes[at].literals.insert(name.clone(), next);
                        next as usize
                    }
                },
                Component::Pattern(pattern) => {
                    let fresh = self.nodes.len() as u32;
                    let next = self.nodes[at].names.child(pattern, || fresh);
                    if next == fresh {
                        self.nodes.push(Node::default());
                    }
                    next as usize
                }
            };
        }
        self.nodes[at].accept.add(value, scope);
    }

    fn push_node(&mut self, is_loop: bool) -> u32 {
        self.nodes.push(Node {
            is_loop,
            ..Node::default()
        });
        (self.nodes.len() - 1) as u32
    }

    fn finish(&mut self) {
        for node in &mut self.nodes {
            node.accept.finish();
            node.accept_below.finish();
            node.names.finish();
            node.literals.shrink_to_fit();
        }
        self.nodes.shrink_to_fit();
    }

    /// Adds to `out` the values of every glob that matches the path made of `names` (byte
    /// ranges of `path`).
    fn walk(
        &self,
        path: &[u8],
        names: &[(usize, usize)],
        agent: Option<u32>,
        scratch: &mut WalkScratch,
        out: &mut Vec<u32>,
    ) {
        self.walk_names(path, names, agent, scratch, out);
        if self.absolute && names.is_empty() {
            self.walk_names(path, &[(0, 0)], agent, scratch, out);
        }
    }

    fn walk_names(
        &self,
        path: &[u8],
        names: &[(usize, usize)],
        agent: Option<u32>,
        s: &mut WalkScratch,
        out: &mut Vec<u32>,
    ) {
        s.active.clear();
        s.new_step(self.nodes.len());
        Self::enter(&self.nodes, 0, &mut s.active, &mut s.seen, s.stamp);
        for &(at, len) in names {
            let name = &path[at..at + len];
            s.new_step(self.nodes.len());
            s.next.clear();
            for &n in &s.active {
                let node = &self.nodes[n as usize];
                node.accept_below.collect(agent, out);
                if node.is_loop {
                    Self::enter(&self.nodes, n, &mut s.next, &mut s.seen, s.stamp);
                }
                if !node.literals.is_empty() {
                    if let Some(&child) = node.literals.get(name) {
                        Self::enter(&self.nodes, child, &mut s.next, &mut s.seen, s.stamp);
                    }
                }
                node.names.for_each_match(name, |child| {
                    Self::enter(&self.nodes, child, &mut s.next, &mut s.seen, s.stamp)
                });
            }
            std::mem::swap(&mut s.active, &mut s.next);
            if s.active.is_empty() {
                return;
            }
        }
        for &n in &s.active {
            self.nodes[n as usize].accept.collect(agent, out);
        }
    }

    /// Makes `node` active, and the `**` node below it (which may match nothing).
    fn enter(nodes: &[Node], node: u32, into: &mut Vec<u32>, seen: &mut [u32], stamp: u32) {
        let mut node = Some(node);
        while let Some(n) = node {
            if seen[n as usize] == stamp {
                return;
            }
            seen[n as usize] = stamp;
            into.push(n);
            node = nodes[n as usize].recursive;
        }
    }
}

/// What the `~` and `${workspace}` of one decision stand for.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    /// The agent (engine index); `None` for a process of no known agent.
    pub agent: Option<u32>,
    /// The agent's workspace, normalized; `None` for no known agent.
    pub workspace: Option<&'a str>,
    /// The agent's own home; `None`: the default homes.
    pub home: Option<&'a str>,
}

/// Every rule's globs of one kind (paths, or binaries).
pub struct GlobIndex {
    absolute: Trie,
    default_homes: Trie,
    own_home: Trie,
    workspace: Trie,
}

impl GlobIndex {
    pub fn new() -> GlobIndex {
        GlobIndex {
            absolute: Trie::new(true),
            default_homes: Trie::new(true),
            own_home: Trie::new(false),
            workspace: Trie::new(false),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.absolute.is_empty()
            && self.default_homes.is_empty()
            && self.own_home.is_empty()
            && self.workspace.is_empty()
    }

    /// Adds `pattern` for rule `value`. `default_homes` are the parsed default homes.
    pub fn insert(
        &mut self,
        pattern: &PathPattern,
        value: u32,
        scope: Scope,
        default_homes: &[PathPattern],
    ) {
        for glob in pattern.globs() {
            match pattern.base() {
                PatternBase::Root => self.absolute.insert(glob, value, scope),
                PatternBase::Workspace => self.workspace.insert(glob, value, scope),
                PatternBase::Home => {
                    self.own_home.insert(glob, value, scope);
                    for home in default_homes.iter().flat_map(|h| h.globs()) {
                        self.default_homes.insert(&join(home, glob), value, scope);
                    }
                }
            }
        }
    }

    pub fn finish(&mut self) {
        for trie in [
            &mut self.absolute,
            &mut self.default_homes,
            &mut self.own_home,
            &mut self.workspace,
        ] {
            trie.finish();
        }
    }

    /// Adds to `out` (sorted, unique) the rules with a glob matching `path` (normalized).
    pub fn hits(
        &self,
        path: &str,
        binding: &Binding<'_>,
        scratch: &mut GlobScratch,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        if self.is_empty() {
            return;
        }
        let names = &mut scratch.names;
        names.clear();
        let mut at = 0;
        for name in path.split('/') {
            if !name.is_empty() {
                names.push((at, name.len()));
            }
            at += name.len() + 1;
        }
        let bytes = path.as_bytes();
        let walk = &mut scratch.walk;
        self.absolute.walk(bytes, names, binding.agent, walk, out);
        match binding.home {
            None => self
                .default_homes
                .walk(bytes, names, binding.agent, walk, out),
            Some(home) => {
                if let Some(below) = below(path, home, names) {
                    self.own_home.walk(bytes, below, binding.agent, walk, out);
                }
            }
        }
        if let Some(ws) = binding.workspace {
            if let Some(below) = below(path, ws, names) {
                self.workspace.walk(bytes, below, binding.agent, walk, out);
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

impl Default for GlobIndex {
    fn default() -> Self {
        GlobIndex::new()
    }
}

/// Per-thread buffers for [`GlobIndex::hits`].
#[derive(Default)]
pub struct GlobScratch {
    /// The path's names, as byte ranges.
    names: Vec<(usize, usize)>,
    walk: WalkScratch,
}

/// The names of `path` below `dir` (`path` is `dir` or inside it; both normalized).
fn below<'n>(path: &str, dir: &str, names: &'n [(usize, usize)]) -> Option<&'n [(usize, usize)]> {
    let rest = path.strip_prefix(dir)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let depth = memchr::memchr_iter(b'/', dir.as_bytes()).count();
    names.get(depth..)
}

/// A default home's glob followed by a `~` glob's components.
fn join(home: &[Component], rest: &[Component]) -> Components {
    let mut joined = home.to_vec();
    for c in rest {
        if *c == Component::Recursive && joined.last() == Some(&Component::Recursive) {
            continue;
        }
        joined.push(c.clone());
    }
    joined
}

#[cfg(test)]
mod tests;
