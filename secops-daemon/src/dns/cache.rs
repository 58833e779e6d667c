//! Answers secops' resolver got upstream, kept for their TTL, per set of upstreams (agents
//! with different resolvers may see different answers for one name, split-horizon DNS, so
//! they never share one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::Chain;

/// How long a negative answer (or one whose records all have TTL 0) is kept at least, so a
/// resolver library's retries do not each go upstream.
const MIN_KEEP: Duration = Duration::from_secs(1);
/// How long any answer is kept at most, whatever its TTL.
const MAX_KEEP: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    upstreams: Arc<[SocketAddr]>,
    name: String,
    qtype: u16,
}

struct Cached {
    chain: Chain,
    stored: Instant,
    until: Instant,
}

/// A cached answer, with the seconds it has been kept.
pub(crate) struct Hit {
    pub(crate) chain: Chain,
    pub(crate) age: u32,
}

/// What `secops status` shows of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheCounts {
    pub(crate) entries: usize,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

pub(crate) struct AnswerCache {
    entries: HashMap<Key, Cached>,
    capacity: usize,
    hits: u64,
    misses: u64,
}

impl AnswerCache {
    pub(crate) fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            entries: HashMap::new(),
            capacity,
            hits: 0,
            misses: 0,
        }
    }

    pub(crate) fn get(
        &mut self,
        upstreams: &Arc<[SocketAddr]>,
        name: &str,
        qtype: u16,
        now: Instant,
    ) -> Option<Hit> {
        let key = Key {
            upstreams: upstreams.clone(),
            name: name.to_owned(),
            qtype,
        };
        match self.entries.get(&key) {
            Some(c) if c.until > now => {
                self.hits += 1;
                Some(Hit {
                    chain: c.chain.clone(),
                    age: now.duration_since(c.stored).as_secs() as u32,
                })
            }
            Some(_) => {
                self.entries.remove(&key);
                self.misses += 1;
                None
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    pub(crate) fn insert(
        &mut self,
        upstreams: &Arc<[SocketAddr]>,
        name: &str,
        qtype: u16,
        chain: Chain,
        now: Instant,
    ) {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, c| c.until > now);
        }
        if self.entries.len() >= self.capacity {
            // Still full of live answers: one goes (any; they are all re-askable).
            if let Some(key) = self.entries.keys().next().cloned() {
                self.entries.remove(&key);
            }
        }
        let keep = Duration::from_secs(u64::from(chain.ttl)).clamp(MIN_KEEP, MAX_KEEP);
        self.entries.insert(
            Key {
                upstreams: upstreams.clone(),
                name: name.to_owned(),
                qtype,
            },
            Cached {
                chain,
                stored: now,
                until: now + keep,
            },
        );
    }

    pub(crate) fn counts(&self) -> CacheCounts {
        CacheCounts {
            entries: self.entries.len(),
            hits: self.hits,
            misses: self.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;

    use super::*;

    fn chain(ttl: u32) -> Chain {
        Chain {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: Vec::new(),
            addresses: vec!["10.0.0.1".parse().unwrap()],
            ttl,
        }
    }

    #[test]
    fn answers_are_kept_for_their_ttl_per_set_of_upstreams() {
        let a: Arc<[SocketAddr]> = Arc::from(vec!["127.0.0.1:53".parse().unwrap()]);
        let b: Arc<[SocketAddr]> = Arc::from(vec!["127.0.0.2:53".parse().unwrap()]);
        let mut cache = AnswerCache::new(10);
        let t0 = Instant::now();
        cache.insert(&a, "x.test", 1, chain(30), t0);
        let hit = cache
            .get(&a, "x.test", 1, t0 + Duration::from_secs(12))
            .unwrap();
        assert_eq!(hit.age, 12);
        assert!(cache.get(&b, "x.test", 1, t0).is_none(), "other upstreams");
        assert!(cache.get(&a, "x.test", 28, t0).is_none(), "other type");
        assert!(cache
            .get(&a, "x.test", 1, t0 + Duration::from_secs(31))
            .is_none());
        assert_eq!(
            cache.counts(),
            CacheCounts {
                entries: 0,
                hits: 1,
                misses: 3
            }
        );
    }

    #[test]
    fn a_full_cache_makes_room() {
        let a: Arc<[SocketAddr]> = Arc::from(vec!["127.0.0.1:53".parse().unwrap()]);
        let mut cache = AnswerCache::new(2);
        let t0 = Instant::now();
        cache.insert(&a, "1.test", 1, chain(0), t0);
        cache.insert(&a, "2.test", 1, chain(600), t0);
        cache.insert(&a, "3.test", 1, chain(600), t0 + Duration::from_secs(2));
        assert_eq!(cache.counts().entries, 2);
        assert!(cache
            .get(&a, "3.test", 1, t0 + Duration::from_secs(2))
            .is_some());
    }
}
