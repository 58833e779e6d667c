//! The DNS door: secops is every agent's resolver. The egress programs send each agent's
//! port-53 packets and connects to that agent's listener here ([`listeners`]); the resolver
//! ([`door`]) asks the engine about each name (`net:dns`) through the one decision path,
//! forwards only allowed names (A, AAAA and the types the policy adds) to the agent's
//! upstreams, refuses everything else, and puts each answer's addresses into that agent's
//! `secops_egress_names` entries for the answer's TTL. [`window`] aggregates repeats in the
//! audit log; [`server`] is its thread.
//!
//! [`DnsLayer`] is the part the rest of the daemon holds: the listeners by agent (made while
//! the agents' kernel entries are written, so an entry never names a port nobody listens
//! on), and what `secops status` shows.

mod door;
mod listeners;
mod server;
mod window;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

pub(crate) use listeners::AgentRef;
use listeners::Listener;
pub(crate) use server::{spawn, DnsServer};

use super::locks::lock;
use crate::api::{CapabilityStatus, DnsAgentStatus, DnsStatus};
use crate::dns::cache::CacheCounts;
use crate::kernel::KernelMaps;
use crate::policy::Policy;

/// What the server thread is told to do.
#[derive(Debug)]
pub(crate) enum Command {
    Serve(Listener),
    Close(u32),
}

#[derive(Debug)]
struct Registered {
    name: String,
    port: Option<u16>,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Registry {
    by_agent: BTreeMap<u32, Registered>,
    /// Ports the pinned programs already send agents to (from an earlier daemon), by agent.
    previous: BTreeMap<u32, u16>,
}

/// Counters the server keeps for `secops status`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DnsCounters {
    pub(crate) answered: u64,
    pub(crate) refused: u64,
    pub(crate) unanswerable: u64,
    pub(crate) upstream_failures: u64,
    pub(crate) resolved_addresses: usize,
    pub(crate) cache: CacheCounts,
}

pub(crate) struct DnsLayer {
    /// Why the layer is not active (no egress programs attached), or `None`.
    off: Option<String>,
    registry: Mutex<Registry>,
    commands: UnboundedSender<Command>,
    receiver: Mutex<Option<UnboundedReceiver<Command>>>,
    counters: Mutex<DnsCounters>,
    /// The host's resolvers (resolv.conf): the upstreams of agents whose policy names none.
    system_upstreams: Arc<[SocketAddr]>,
}

impl DnsLayer {
    /// `off`: why agents' DNS cannot be redirected on this host (then their resolvers stay
    /// plain allowlist entries, as without this layer). `previous`: the listener ports an
    /// earlier daemon left pinned (port, agent index).
    pub(crate) fn new(off: Option<String>, previous: Vec<(u16, u32)>) -> DnsLayer {
        let (commands, receiver) = unbounded_channel();
        DnsLayer {
            off,
            registry: Mutex::new(Registry {
                by_agent: BTreeMap::new(),
                previous: previous.into_iter().map(|(p, a)| (a, p)).collect(),
            }),
            commands,
            receiver: Mutex::new(Some(receiver)),
            counters: Mutex::new(DnsCounters::default()),
            system_upstreams: system_upstreams(),
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.off.is_none()
    }

    /// The port of `agent`'s listener, bound (and marked in the kernel as a listener no agent
    /// may address) if it was not: 0 when the layer is off or the listener cannot be made
    /// (then the agent has no DNS at all: its resolvers are not in its allowlist either).
    pub(crate) fn port_for(&self, agent: &AgentRef, maps: &mut KernelMaps) -> u16 {
        if !self.active() {
            return 0;
        }
        let mut registry = lock(&self.registry);
        if let Some(Registered {
            port: Some(port), ..
        }) = registry.by_agent.get(&agent.index)
        {
            return *port;
        }
        let preferred = registry.previous.remove(&agent.index);
        let made = Listener::bind(agent.clone(), preferred)
            .map_err(|e| format!("binding its listener on loopback: {e}"))
            .and_then(|listener| {
                maps.add_dns_listener(listener.port, agent.index)
                    .map_err(|e| format!("marking its listener port in the kernel: {e}"))?;
                let port = listener.port;
                self.commands
                    .send(Command::Serve(listener))
                    .map_err(|_| "the DNS server has stopped".to_owned())?;
                Ok(port)
            });
        let (port, error) = match made {
            Ok(port) => {
                tracing::info!(agent = %agent.name, port, "DNS listener for the agent on 127.0.0.1 and [::1]");
                (Some(port), None)
            }
            Err(e) => {
                tracing::error!(agent = %agent.name, "the agent gets NO DNS (its port-53 traffic is denied): {e}");
                (None, Some(e))
            }
        };
        registry.by_agent.insert(
            agent.index,
            Registered {
                name: agent.name.clone(),
                port,
                error,
            },
        );
        port.unwrap_or(0)
    }

    /// Stops `agent_index`'s listener, if it has one.
    pub(crate) fn close(&self, agent_index: u32, maps: &mut KernelMaps) {
        let Some(registered) = lock(&self.registry).by_agent.remove(&agent_index) else {
            return;
        };
        if let Some(port) = registered.port {
            if let Err(e) = maps.remove_dns_listener(port) {
                tracing::warn!(port, "removing a DNS listener port from the kernel: {e}");
            }
            let _ = self.commands.send(Command::Close(agent_index));
        }
    }

    /// Removes listener ports from the kernel that no listener of this daemon has (left
    /// pinned by an earlier one): they might be bound by anyone now.
    pub(crate) fn forget_stale(&self, maps: &mut KernelMaps) {
        let ours: Vec<u16> = lock(&self.registry)
            .by_agent
            .values()
            .filter_map(|r| r.port)
            .collect();
        match maps.dns_listeners() {
            Ok(pinned) => {
                for (port, _) in pinned.into_iter().filter(|(p, _)| !ours.contains(p)) {
                    if let Err(e) = maps.remove_dns_listener(port) {
                        tracing::warn!(port, "removing a stale DNS listener port: {e}");
                    }
                }
            }
            Err(e) => tracing::warn!("reading the DNS listener ports: {e}"),
        }
    }

    /// The commands for the server thread (taken once, by it).
    fn take_commands(&self) -> Option<UnboundedReceiver<Command>> {
        lock(&self.receiver).take()
    }

    fn set_counters(&self, counters: DnsCounters) {
        *lock(&self.counters) = counters;
    }

    /// The upstreams of `agent`: its policy's resolvers, else the host's.
    pub(crate) fn upstreams(&self, policy: &Policy, agent: &str) -> Arc<[SocketAddr]> {
        match policy.egress.get(agent) {
            Some(e) if !e.dns_resolvers.is_empty() => Arc::from(e.dns_resolvers.as_slice()),
            _ => self.system_upstreams.clone(),
        }
    }

    /// The layer's line in the daemon's layers.
    pub(crate) fn capability(&self, egress_attached: bool) -> CapabilityStatus {
        let (active, detail) = match (&self.off, egress_attached) {
            (None, true) => (
                true,
                "agents' port-53 traffic answered by the daemon: only allowlisted names \
                 resolve, their addresses allowed per agent for the answer's TTL"
                    .to_owned(),
            ),
            (None, false) => (
                false,
                "the egress programs did not attach: agents' DNS is not redirected".to_owned(),
            ),
            (Some(why), _) => (false, format!("not redirecting agents' DNS: {why}")),
        };
        CapabilityStatus {
            name: "DNS resolver".to_owned(),
            key: crate::policy::Layer::Dns.as_str().to_owned(),
            active,
            detail,
        }
    }

    /// The layer as `secops status` shows it.
    pub(crate) fn status(&self, policy: &Policy) -> DnsStatus {
        let counters = *lock(&self.counters);
        let registry = lock(&self.registry);
        DnsStatus {
            active: self.active(),
            detail: match &self.off {
                None => "every agent's port-53 traffic (UDP and TCP, IPv4 and IPv6) goes to the \
                         daemon's resolver, which answers only names its allowlist names; their \
                         addresses are allowed for that agent for the answer's TTL"
                    .to_owned(),
                Some(why) => format!(
                    "NOT active ({why}): agents' DNS goes straight to their resolvers, which \
                     answer any name (data can leave in names)"
                ),
            },
            agents: registry
                .by_agent
                .values()
                .map(|r| DnsAgentStatus {
                    agent: r.name.clone(),
                    port: r.port,
                    error: r.error.clone(),
                    upstreams: self
                        .upstreams(policy, &r.name)
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                })
                .collect(),
            cache_entries: counters.cache.entries as u64,
            cache_hits: counters.cache.hits,
            cache_misses: counters.cache.misses,
            resolved_addresses: counters.resolved_addresses as u64,
            answered: counters.answered,
            refused: counters.refused,
            unanswerable: counters.unanswerable,
            upstream_failures: counters.upstream_failures,
        }
    }
}

/// The host's resolvers, from resolv.conf (port 53); none if it cannot be read.
fn system_upstreams() -> Arc<[SocketAddr]> {
    match hickory_resolver::system_conf::read_system_conf() {
        Ok((config, _)) => {
            let mut servers: Vec<SocketAddr> = config
                .name_servers()
                .iter()
                .map(|ns| SocketAddr::new(ns.ip.to_canonical(), 53))
                .collect();
            servers.dedup();
            Arc::from(servers)
        }
        Err(e) => {
            tracing::warn!("no system DNS configuration ({e}): agents whose policy names no dns_resolvers get SERVFAIL for allowed names");
            Arc::from(Vec::new())
        }
    }
}
