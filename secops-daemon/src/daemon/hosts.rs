//! Host names in egress allowlists that the daemon resolves itself and writes into the agents'
//! egress tries (a name that does not resolve allows nothing).
//!
//! With the DNS layer active, agents' own lookups gate addresses (`daemon/dns/`), per agent
//! and per answer; the daemon then resolves only the names /etc/hosts gives, because an
//! agent's resolver library answers those without asking DNS, so no answer of secops'
//! resolver could ever allow them. Without the DNS layer (no egress programs), every exact
//! name is resolved here, with its TTL, as before.

use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::ResolveHosts;
use hickory_resolver::TokioResolver;

use super::state::{lock, Shared};
use crate::enforce::{allowlist_hosts, HostAddrs};

/// How soon and how late a host name is resolved again, whatever its TTL says: a zero TTL
/// must not spin, and an address that moves must not stay allowed (or denied) for a day.
const MIN_HOST_REFRESH: Duration = Duration::from_secs(1);
const MAX_HOST_REFRESH: Duration = Duration::from_secs(300);

/// The system's DNS configuration (resolv.conf), with /etc/hosts consulted first. `None` when
/// the configuration cannot be read: then getaddrinfo is used, which reports no TTLs.
fn system_resolver() -> Option<TokioResolver> {
    let mut builder = match TokioResolver::builder_tokio() {
        Ok(builder) => builder,
        Err(e) => {
            tracing::warn!("no DNS configuration ({e}); host names are resolved with getaddrinfo every 30 s, without TTLs");
            return None;
        }
    };
    let options = builder.options_mut();
    options.use_hosts_file = ResolveHosts::Always;
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder
        .build()
        .map_err(|e| tracing::warn!("building the DNS resolver: {e}"))
        .ok()
}

/// Resolves host names for egress allowlists, all at once. Returns the addresses (a name
/// that does not resolve allows nothing) and how long until the first answer's TTL runs out.
async fn resolve_hosts(
    resolver: Option<&TokioResolver>,
    names: &[String],
    retry: Duration,
) -> (HostAddrs, Duration) {
    let mut lookups = tokio::task::JoinSet::new();
    for name in names {
        let name = name.clone();
        let resolver = resolver.cloned();
        lookups.spawn(async move {
            let result: Result<(Vec<std::net::IpAddr>, Option<Duration>), String> = match &resolver
            {
                Some(r) => r
                    .lookup_ip(name.as_str())
                    .await
                    .map_err(|e| e.to_string())
                    .map(|lookup| {
                        let ttl = lookup
                            .valid_until()
                            .saturating_duration_since(std::time::Instant::now());
                        (lookup.iter().collect(), Some(ttl))
                    }),
                None => tokio::net::lookup_host((name.as_str(), 0))
                    .await
                    .map_err(|e| e.to_string())
                    .map(|a| (a.map(|a| a.ip()).collect(), None)),
            };
            (name, result)
        });
    }
    let mut out = HostAddrs::new();
    let mut next = MAX_HOST_REFRESH;
    while let Some(joined) = lookups.join_next().await {
        let Ok((name, result)) = joined else { continue };
        match result {
            Ok((addrs, ttl)) => {
                let mut list: Vec<_> = addrs.into_iter().map(|a| a.to_canonical()).collect();
                list.sort();
                list.dedup();
                next = next.min(ttl.unwrap_or(retry));
                out.insert(name, list);
            }
            Err(e) => {
                tracing::warn!(host = %name, "egress host name does not resolve (nothing allowed for it): {e}");
                next = next.min(retry);
                out.insert(name, Vec::new());
            }
        }
    }
    (out, next.clamp(MIN_HOST_REFRESH, MAX_HOST_REFRESH))
}

/// The addresses /etc/hosts gives the names (names it does not have are left out).
fn from_hosts_file(names: &[String]) -> HostAddrs {
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::{Name, RData, RecordType};
    let hosts = match hickory_resolver::Hosts::from_system() {
        Ok(hosts) => hosts,
        Err(e) => {
            tracing::warn!("reading /etc/hosts: {e}");
            return HostAddrs::new();
        }
    };
    let mut out = HostAddrs::new();
    for name in names {
        let Ok(dns_name) = Name::from_ascii(name) else {
            continue;
        };
        let mut addrs: Vec<std::net::IpAddr> = [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|t| hosts.lookup_static_host(&Query::query(dns_name.clone(), t)))
            .flat_map(|lookup| lookup.answers().to_vec())
            .filter_map(|r| match r.data {
                RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0).to_canonical()),
                _ => None,
            })
            .collect();
        addrs.sort();
        addrs.dedup();
        if !addrs.is_empty() {
            out.insert(name.clone(), addrs);
        }
    }
    out
}

/// Keeps the resolved addresses of allowlist host names current: resolved at start, then
/// again when the first answer's TTL runs out (failures are retried every `host_refresh`);
/// with the DNS layer, /etc/hosts read again every `host_refresh`.
pub(crate) async fn refresh_hosts(shared: Arc<Shared>) {
    let dns_layer = shared.dns.active();
    let resolver = if dns_layer { None } else { system_resolver() };
    loop {
        let names = allowlist_hosts(shared.engine().policy());
        let (fresh, next) = if dns_layer {
            (from_hosts_file(&names), shared.options.host_refresh)
        } else {
            resolve_hosts(resolver.as_ref(), &names, shared.options.host_refresh).await
        };
        let changed = *lock(&shared.hosts) != fresh;
        if changed {
            *lock(&shared.hosts) = fresh;
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = s.resync() {
                    tracing::error!("updating egress after host names changed: {e:#}");
                }
            })
            .await;
        }
        tokio::time::sleep(next).await;
    }
}
