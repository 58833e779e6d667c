//! Who is served when. Every caller belongs to a class — an agent (by name, whatever uid its
//! processes run as), another user (by uid), or the admins — and each class has its own
//! budget, so no agent can hold the connections, the queue or the API thread that the others
//! and the kill switch need:
//!
//! - admins have their own connections (`admin_connections`), which no agent can take;
//! - every other class may have `agent_connections` served at once and `agent_queue` more
//!   accepted and waiting for a turn; past that a connection is answered 429 and closed at
//!   once, so a flood costs the daemon one accept and one write per connection;
//! - all non-admin classes together have `max_connections` served at once;
//! - each non-admin class may make `agent_rate` requests a second (a burst of twice that);
//!   past it a request is answered 429 with `retry-after`.
//!
//! Connections are accepted as fast as they come (identity is read at accept), so an
//! admin's connection never waits in the kernel's backlog behind an agent's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::super::locks::lock;
use super::super::options::ApiLimits;
use super::identity::Caller;
use crate::api::Role;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Class {
    Admins,
    Agent(String),
    /// In an agent cgroup that belongs to no agent the daemon knows, or not placed at all.
    UnknownAgent(u32),
    User(u32),
}

impl Class {
    fn of(caller: &Caller) -> Class {
        match (caller.role, &caller.agent) {
            (Role::Admin, _) => Class::Admins,
            (Role::Agent, Some(agent)) => Class::Agent(agent.clone()),
            (Role::Agent, None) => Class::UnknownAgent(caller.uid),
            (Role::User, _) => Class::User(caller.uid),
        }
    }

    fn describe(&self) -> String {
        match self {
            Class::Admins => "the admins".to_owned(),
            Class::Agent(name) => format!("agent {name}"),
            Class::UnknownAgent(uid) => format!("uid {uid} in an unknown agent cgroup"),
            Class::User(uid) => format!("uid {uid}"),
        }
    }
}

/// One class's budget.
struct Budget {
    served: Arc<Semaphore>,
    waiting: AtomicUsize,
    requests: Mutex<Bucket>,
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What lets a connection be served; dropping it gives the turn to the next one.
pub(crate) struct Admitted {
    _class: Option<OwnedSemaphorePermit>,
    _everyone: OwnedSemaphorePermit,
}

/// Why a connection or request is not served now, as the 429 says.
#[derive(Debug)]
pub(crate) struct TooMany(pub(crate) String);

pub(crate) struct Admission {
    limits: ApiLimits,
    admins: Arc<Semaphore>,
    everyone: Arc<Semaphore>,
    classes: Mutex<HashMap<Class, Arc<Budget>>>,
}

impl Admission {
    pub(crate) fn new(limits: ApiLimits) -> Admission {
        Admission {
            limits,
            admins: Arc::new(Semaphore::new(limits.admin_connections.max(1))),
            everyone: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            classes: Mutex::new(HashMap::new()),
        }
    }

    fn budget(&self, class: &Class) -> Arc<Budget> {
        let mut classes = lock(&self.classes);
        // Classes nobody is connected as any more are forgotten, so uids cannot grow the map.
        if classes.len() > 4096 {
            classes.retain(|_, b| Arc::strong_count(b) > 1);
        }
        classes
            .entry(class.clone())
            .or_insert_with(|| {
                Arc::new(Budget {
                    served: Arc::new(Semaphore::new(self.limits.agent_connections.max(1))),
                    waiting: AtomicUsize::new(0),
                    requests: Mutex::new(Bucket {
                        tokens: self.burst(),
                        at: Instant::now(),
                    }),
                })
            })
            .clone()
    }

    fn burst(&self) -> f64 {
        2.0 * self.limits.agent_rate.max(1) as f64
    }

    /// Waits for the connection's turn, or refuses it at once when its class already has as
    /// many connections waiting as it may.
    pub(crate) async fn admit(&self, caller: Option<&Caller>) -> Result<Admitted, TooMany> {
        let class = caller.map_or(Class::User(u32::MAX), Class::of);
        if class == Class::Admins {
            let permit = self.admins.clone().acquire_owned().await;
            return permit
                .map(|p| Admitted {
                    _class: None,
                    _everyone: p,
                })
                .map_err(|_| TooMany("the API is shutting down".into()));
        }
        let budget = self.budget(&class);
        let queued = budget.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&budget.waiting);
        if queued >= self.limits.agent_queue {
            return Err(TooMany(format!(
                "{} already has {} connections served and {queued} waiting (--api-agent-connections, \
                 --api-agent-queue); this one is closed",
                class.describe(),
                self.limits.agent_connections,
            )));
        }
        let shutting_down = |_| TooMany("the API is shutting down".into());
        let own = budget
            .served
            .clone()
            .acquire_owned()
            .await
            .map_err(shutting_down)?;
        let everyone = self
            .everyone
            .clone()
            .acquire_owned()
            .await
            .map_err(shutting_down)?;
        Ok(Admitted {
            _class: Some(own),
            _everyone: everyone,
        })
    }

    /// Takes one request from the caller's class budget; admins are not limited.
    pub(crate) fn request(&self, caller: Option<&Caller>) -> Result<(), TooMany> {
        let class = caller.map_or(Class::User(u32::MAX), Class::of);
        if class == Class::Admins {
            return Ok(());
        }
        let budget = self.budget(&class);
        let mut bucket = lock(&budget.requests);
        let now = Instant::now();
        let rate = self.limits.agent_rate.max(1) as f64;
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(self.burst());
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(TooMany(format!(
                "{} sends more than {} requests a second (--api-agent-rate)",
                class.describe(),
                self.limits.agent_rate
            )));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

/// Leaves the waiting count when the wait ends, however it ends.
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn caller(role: Role, agent: Option<&str>, uid: u32) -> Caller {
        Caller {
            pid: Some(1),
            uid,
            gid: uid,
            role,
            agent: agent.map(str::to_owned),
            agent_cgroup_id: None,
            comm: None,
        }
    }

    fn limits() -> ApiLimits {
        ApiLimits {
            max_connections: 8,
            agent_connections: 2,
            agent_queue: 3,
            admin_connections: 1,
            agent_rate: 5,
            ..ApiLimits::default()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_agent_that_holds_its_connections_leaves_the_admins_theirs() {
        let admission = Arc::new(Admission::new(limits()));
        let web = caller(Role::Agent, Some("web"), 1000);
        let held: Vec<Admitted> = vec![
            admission.admit(Some(&web)).await.unwrap(),
            admission.admit(Some(&web)).await.unwrap(),
        ];
        // Three more may wait for a turn; the fourth is refused at once.
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let (a, w) = (admission.clone(), web.clone());
            waiting.push(tokio::spawn(async move { a.admit(Some(&w)).await.is_ok() }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = admission.admit(Some(&web)).await.err().expect("refused");
        assert!(refused.0.contains("agent web"), "{}", refused.0);
        // Another agent and the admins are served meanwhile.
        let ops = caller(Role::Agent, Some("ops"), 1000);
        let _ops = tokio::time::timeout(Duration::from_secs(1), admission.admit(Some(&ops)))
            .await
            .expect("another agent is not held up")
            .unwrap();
        let admin = caller(Role::Admin, None, 0);
        let _admin = tokio::time::timeout(Duration::from_secs(1), admission.admit(Some(&admin)))
            .await
            .expect("the admins are not held up")
            .unwrap();
        drop(held);
        for w in waiting {
            assert!(w.await.unwrap(), "the waiting ones are served in turn");
        }
    }

    #[test]
    fn requests_past_the_rate_are_refused_and_admins_are_never_limited() {
        let admission = Admission::new(limits());
        let web = caller(Role::Agent, Some("web"), 1000);
        let served = (0..20)
            .filter(|_| admission.request(Some(&web)).is_ok())
            .count();
        assert_eq!(served, 10, "a burst of twice the rate, then refusals");
        let other = caller(Role::User, None, 1001);
        assert!(
            admission.request(Some(&other)).is_ok(),
            "each class has its own budget"
        );
        let admin = caller(Role::Admin, None, 0);
        assert!((0..100).all(|_| admission.request(Some(&admin)).is_ok()));
    }
}
