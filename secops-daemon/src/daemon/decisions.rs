//! Exact accounting of the kernel's denials across daemon crashes (issue 20, item 4).
//!
//! The programs count every denial and escalation they report, per agent cgroup, action slot
//! and verdict, in the decision epoch the config names (`secops_decisions`). Each record of
//! a counted event carries its counter key at the end of its reason (a [`tag`]), and the
//! daemon keeps in the log, in `sys:audit` records of its own ([`Accounting`]), how many
//! of each key the log accounts for. So after a `kill -9`, the next daemon knows exactly:
//!
//! 1. what the log accounts for: the newest accounting record plus the tagged records after
//!    it (a batch whose records committed before its accounting record did);
//! 2. what the kernel counted: it starts a new epoch, waits until no program can still be
//!    counting in the old one (an RCU grace period: every BPF program runs inside an RCU
//!    read-side section), and reads the old epochs' counters, which are then final;
//! 3. what is still on its way: events of the old epochs left in the pinned ring buffer lie
//!    below the producer position read after the grace period, and are audited as usual.
//!
//! Once the reader has consumed up to that position and their records are committed, every
//! count of an old epoch the log does not account for was taken from the ring buffer by the
//! crashed daemon and never committed: it is audited as lost, one record per key, with its
//! exact count, and the old epochs' counters are removed.

use std::collections::BTreeMap;
use std::time::Duration;

use secops_common::kernel::{kernel_action, DecisionKey, STATS_SUBS, VERDICT_ESCALATE};
use secops_common::{CoreAction, RiskLevel, Verdict};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditPaths, AuditReader, NewRecord, QueryFilter, Record, Source};
use crate::kernel::KernelMaps;

/// The rule id of the accounting records.
pub(crate) const ACCOUNTING_RULE: &str = "kernel.decisions-accounted";
/// The rule id of the records of denials lost in a crash.
pub(crate) const LOST_RULE: &str = "kernel.decisions-lost-in-crash";
const TAG_PREFIX: &str = " [kernel decision ";
const STATE_PREFIX: &str = "state: ";

/// A counter key without its epoch.
type Key = (u64, u16, u8);

/// What the log accounts for, per counter, for the counter map `map_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Accounting {
    map_id: u32,
    epochs: BTreeMap<u32, BTreeMap<Key, u64>>,
    /// The agent names seen behind cgroup ids, for the lost records of a removed agent.
    names: BTreeMap<u64, String>,
    /// Denials audited as lost in crashes, ever (in this map).
    lost: u64,
    /// Denials committed as records, ever (in this map).
    committed: u64,
}

/// The JSON form of [`Accounting`] in a record's reason.
#[derive(Serialize, Deserialize)]
struct Stored {
    map: u32,
    /// [epoch, cgroup id, slot, verdict, count]
    counts: Vec<[u64; 5]>,
    names: Vec<(u64, String)>,
    lost: u64,
    committed: u64,
}

/// One tagged record: which counter it accounts for, and how many (1, or a lost count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tagged {
    pub(crate) key: DecisionKey,
    pub(crate) lost: Option<u64>,
}

/// The tag a counted event's record ends with (through the request's note).
pub(crate) fn tag(key: &DecisionKey) -> String {
    format!(
        "{TAG_PREFIX}{}/{}/{}/{}]",
        key.epoch, key.cgroup_id, key.slot, key.verdict
    )
}

fn lost_tag(key: &DecisionKey, count: u64) -> String {
    format!(
        "{TAG_PREFIX}{}/{}/{}/{} lost {count}]",
        key.epoch, key.cgroup_id, key.slot, key.verdict
    )
}

/// The tag of a kernel record, if it ends with one that names its own cgroup.
pub(crate) fn parse_tag(record: &NewRecord) -> Option<Tagged> {
    if record.source != Source::Kernel {
        return None;
    }
    let reason = record.reason.strip_suffix(']')?;
    let at = reason.rfind(TAG_PREFIX)?;
    let body = &reason[at + TAG_PREFIX.len()..];
    let (key, lost) = match body.split_once(" lost ") {
        Some((key, n)) => (key, Some(n.parse().ok()?)),
        None => (body, None),
    };
    let mut parts = key.split('/');
    let key = DecisionKey {
        epoch: parts.next()?.parse().ok()?,
        cgroup_id: parts.next()?.parse().ok()?,
        slot: parts.next()?.parse().ok()?,
        verdict: parts.next()?.parse().ok()?,
        pad: 0,
    };
    if parts.next().is_some() || record.cgroup_id != Some(key.cgroup_id) {
        return None;
    }
    Some(Tagged { key, lost })
}

impl Accounting {
    pub(crate) fn new(map_id: u32) -> Accounting {
        Accounting {
            map_id,
            ..Accounting::default()
        }
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// A record (committed) accounts for `tagged`.
    pub(crate) fn add(&mut self, tagged: &Tagged, agent: Option<&str>) {
        let k = tagged.key;
        let n = tagged.lost.unwrap_or(1);
        *self
            .epochs
            .entry(k.epoch)
            .or_default()
            .entry((k.cgroup_id, k.slot, k.verdict))
            .or_default() += n;
        match tagged.lost {
            Some(n) => self.lost += n,
            None => self.committed += 1,
        }
        if let Some(agent) = agent {
            if self.names.get(&k.cgroup_id).map(String::as_str) != Some(agent) {
                self.names.insert(k.cgroup_id, agent.to_owned());
            }
        }
    }

    /// How many of `key` the log accounts for.
    fn accounted(&self, key: &DecisionKey) -> u64 {
        self.epochs
            .get(&key.epoch)
            .and_then(|e| e.get(&(key.cgroup_id, key.slot, key.verdict)))
            .copied()
            .unwrap_or(0)
    }

    /// Sums what the log accounts for, over every epoch.
    pub(crate) fn accounted_total(&self) -> u64 {
        self.epochs.values().flat_map(|e| e.values()).sum()
    }

    /// The record that keeps this state in the log.
    pub(crate) fn record(&self, now_ns: i64) -> NewRecord {
        let stored = Stored {
            map: self.map_id,
            counts: self
                .epochs
                .iter()
                .flat_map(|(epoch, counts)| {
                    counts.iter().map(|(&(cgroup, slot, verdict), &n)| {
                        [
                            u64::from(*epoch),
                            cgroup,
                            u64::from(slot),
                            u64::from(verdict),
                            n,
                        ]
                    })
                })
                .collect(),
            names: self.names.iter().map(|(c, n)| (*c, n.clone())).collect(),
            lost: self.lost,
            committed: self.committed,
        };
        let json = serde_json::to_string(&stored).unwrap_or_default();
        NewRecord {
            rule_id: Some(ACCOUNTING_RULE.to_owned()),
            ..NewRecord::new(
                now_ns,
                CoreAction::SysAudit.as_str(),
                Verdict::Allow,
                RiskLevel::Low,
                format!(
                    "the kernel's denials this log accounts for, per decision counter \
                     ({} committed, {} lost in crashes); {STATE_PREFIX}{json}",
                    self.committed, self.lost
                ),
                Source::Daemon,
            )
        }
    }

    fn from_record(record: &Record) -> Option<Accounting> {
        let body = &record.body;
        if body.rule_id.as_deref() != Some(ACCOUNTING_RULE) || body.source != Source::Daemon {
            return None;
        }
        let at = body.reason.find(STATE_PREFIX)?;
        let stored: Stored = serde_json::from_str(&body.reason[at + STATE_PREFIX.len()..]).ok()?;
        let mut epochs: BTreeMap<u32, BTreeMap<Key, u64>> = BTreeMap::new();
        for [epoch, cgroup, slot, verdict, n] in stored.counts {
            let (Ok(epoch), Ok(slot), Ok(verdict)) = (
                u32::try_from(epoch),
                u16::try_from(slot),
                u8::try_from(verdict),
            ) else {
                continue;
            };
            epochs
                .entry(epoch)
                .or_default()
                .insert((cgroup, slot, verdict), n);
        }
        Some(Accounting {
            map_id: stored.map,
            epochs,
            names: stored.names.into_iter().collect(),
            lost: stored.lost,
            committed: stored.committed,
        })
    }

    /// What the log at `paths` accounts for in the counter map `map_id`: the newest
    /// accounting record, plus the tagged records after it. A log that accounts for another
    /// map (made anew after a teardown) accounts for nothing in this one.
    pub(crate) fn from_log(paths: &AuditPaths, map_id: u32) -> anyhow::Result<Accounting> {
        let reader = AuditReader::open(paths)?;
        let filter = QueryFilter {
            action: Some(CoreAction::SysAudit.as_str().to_owned()),
            ..QueryFilter::default()
        };
        // The newest accounting record is among the newest sys:audit records unless other
        // sys:audit records (witness, rotation) came after it: then all of them are read.
        let mut newest = reader
            .tail_matching(&filter, 256)?
            .iter()
            .rev()
            .find_map(|r| Accounting::from_record(r).map(|a| (r.seq, a)));
        if newest.is_none() {
            for record in reader.iter(&filter)? {
                let record = record?;
                if let Some(a) = Accounting::from_record(&record) {
                    newest = Some((record.seq, a));
                }
            }
        }
        let (after, mut accounting) = match newest {
            Some((seq, a)) if a.map_id == map_id => (seq, a),
            Some((seq, a)) => {
                tracing::warn!(
                    "the log accounts for kernel denials of another counter map ({}, now {map_id}): \
                     the counters were removed since; starting from nothing",
                    a.map_id
                );
                (seq, Accounting::new(map_id))
            }
            None => (0, Accounting::new(map_id)),
        };
        let tail = QueryFilter {
            after_seq: Some(after),
            ..QueryFilter::default()
        };
        for record in reader.iter(&tail)? {
            let record = record?;
            if let Some(tagged) = parse_tag(&record.body) {
                accounting.add(&tagged, record.body.agent.as_deref());
            }
        }
        Ok(accounting)
    }

    /// The lost records for the counters of epochs before `epoch` (final: see the module
    /// doc) that the log does not account for, and forgets those epochs (their records are
    /// to be awaited before the next accounting record, which then no longer names them).
    pub(crate) fn settle_epochs_before(
        &mut self,
        epoch: u32,
        final_counts: &[(DecisionKey, u64)],
        agent_name: impl Fn(u64) -> Option<String>,
        now_ns: i64,
    ) -> Vec<(Tagged, NewRecord)> {
        let mut lost = Vec::new();
        for (key, counted) in final_counts.iter().filter(|(k, _)| k.epoch < epoch) {
            let accounted = self.accounted(key);
            if accounted > *counted {
                tracing::error!(
                    ?key,
                    counted,
                    accounted,
                    "the log accounts for more kernel denials than the kernel counted"
                );
                continue;
            }
            let missing = counted - accounted;
            if missing == 0 {
                continue;
            }
            let agent =
                agent_name(key.cgroup_id).or_else(|| self.names.get(&key.cgroup_id).cloned());
            lost.push((
                Tagged {
                    key: *key,
                    lost: Some(missing),
                },
                lost_record(key, missing, agent, now_ns),
            ));
        }
        lost
    }

    /// Forgets the epochs before `epoch`: every count in them is accounted for.
    pub(crate) fn retire_before(&mut self, epoch: u32) {
        self.epochs.retain(|e, _| *e >= epoch);
    }
}

/// One typed record for `count` denials (or escalations) of one agent and action that the
/// kernel decided and counted, and that a crashed daemon took from the ring buffer but never
/// committed.
fn lost_record(key: &DecisionKey, count: u64, agent: Option<String>, now_ns: i64) -> NewRecord {
    let kind = u32::from(key.slot) / STATS_SUBS as u32;
    let sub = u32::from(key.slot) % STATS_SUBS as u32;
    let action = kernel_action(kind, sub).unwrap_or(CoreAction::SysBpf);
    let verdict = if u32::from(key.verdict) == VERDICT_ESCALATE {
        Verdict::Escalate
    } else {
        Verdict::Deny
    };
    NewRecord {
        agent,
        cgroup_id: Some(key.cgroup_id),
        rule_id: Some(LOST_RULE.to_owned()),
        ..NewRecord::new(
            now_ns,
            action.as_str(),
            verdict,
            RiskLevel::High,
            format!(
                "{count} {} {verdict}(s) decided in the kernel and lost in a daemon crash (taken \
                 from the ring buffer, never committed){}",
                action.as_str(),
                lost_tag(key, count)
            ),
            Source::Kernel,
        )
    }
}

/// A new decision epoch, begun when the daemon starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EpochStart {
    pub(crate) epoch: u32,
    /// Every event of an earlier epoch lies below this ring buffer position.
    pub(crate) drain_to: u64,
}

/// Starts a new decision epoch: writes it into the config, waits until no program can still
/// count in an earlier one, then reads where the ring buffer's producer is (`produced`).
pub(crate) fn begin_epoch(
    maps: &mut KernelMaps,
    produced: impl FnOnce() -> u64,
) -> anyhow::Result<EpochStart> {
    let mut config = maps.config()?;
    let newest = maps
        .decision_counts()?
        .iter()
        .map(|(k, _)| k.epoch)
        .max()
        .unwrap_or(0);
    let epoch = config.decision_epoch.max(newest).saturating_add(1);
    config.decision_epoch = epoch;
    maps.set_config(&config)?;
    wait_for_running_programs();
    Ok(EpochStart {
        epoch,
        drain_to: produced(),
    })
}

/// Every BPF program secops attaches runs inside an RCU read-side critical section: once a
/// grace period has passed, every run that could have read the old config has ended.
/// membarrier(MEMBARRIER_CMD_GLOBAL) waits for one (synchronize_rcu) on machines with more
/// than one CPU; the sleep covers a single CPU, where it returns at once.
fn wait_for_running_programs() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier(2) takes no pointers.
    let ret = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if ret != 0 {
        tracing::warn!(
            "membarrier: {}; waiting for running BPF programs by time alone",
            std::io::Error::last_os_error()
        );
    }
    std::thread::sleep(Duration::from_millis(50));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(epoch: u32, cgroup: u64) -> DecisionKey {
        DecisionKey {
            cgroup_id: cgroup,
            epoch,
            slot: 5 * 32 + 6,
            verdict: 1,
            pad: 0,
        }
    }

    fn kernel_record(reason: String, cgroup: u64) -> NewRecord {
        NewRecord {
            cgroup_id: Some(cgroup),
            ..NewRecord::new(
                1,
                "net:connect",
                Verdict::Deny,
                RiskLevel::High,
                reason,
                Source::Kernel,
            )
        }
    }

    #[test]
    fn tags_name_their_key_and_only_their_own_cgroup() {
        let k = key(3, 77);
        let r = kernel_record(format!("denied (x){}", tag(&k)), 77);
        assert_eq!(parse_tag(&r), Some(Tagged { key: k, lost: None }));
        let lost = lost_record(&k, 12, Some("a".into()), 5);
        assert_eq!(
            parse_tag(&lost),
            Some(Tagged {
                key: k,
                lost: Some(12)
            })
        );
        assert_eq!(lost.action, "net:connect");
        assert_eq!(lost.verdict, Verdict::Deny);
        let other = kernel_record(format!("denied{}", tag(&k)), 78);
        assert_eq!(
            parse_tag(&other),
            None,
            "a tag naming another cgroup is not one"
        );
        let inside = kernel_record(format!("denied ({} x)", tag(&k)), 77);
        assert_eq!(
            parse_tag(&inside),
            None,
            "only a tag at the very end counts"
        );
        let api = NewRecord {
            source: Source::Api,
            ..r.clone()
        };
        assert_eq!(parse_tag(&api), None);
    }

    #[test]
    fn the_state_reads_back_from_its_record() {
        let mut a = Accounting::new(9);
        a.add(
            &Tagged {
                key: key(2, 7),
                lost: None,
            },
            Some("agent-a"),
        );
        a.add(
            &Tagged {
                key: key(2, 7),
                lost: None,
            },
            Some("agent-a"),
        );
        a.add(
            &Tagged {
                key: key(3, 8),
                lost: Some(4),
            },
            None,
        );
        let record = Record {
            seq: 1,
            body: a.record(10),
            prev_hash: [0; 32],
            hash: [0; 32],
        };
        assert_eq!(Accounting::from_record(&record), Some(a.clone()));
        assert_eq!((a.committed(), a.lost(), a.accounted_total()), (2, 4, 6));
    }

    #[test]
    fn lost_is_what_the_kernel_counted_and_the_log_does_not_account_for() {
        let mut a = Accounting::new(1);
        for _ in 0..5 {
            a.add(
                &Tagged {
                    key: key(1, 7),
                    lost: None,
                },
                Some("a"),
            );
        }
        let counts = [(key(1, 7), 8), (key(1, 9), 2), (key(2, 7), 100)];
        let lost = a.settle_epochs_before(2, &counts, |_| None, 0);
        let found: Vec<_> = lost
            .iter()
            .map(|(t, _)| (t.key.cgroup_id, t.lost))
            .collect();
        assert_eq!(
            found,
            [(7, Some(3)), (9, Some(2))],
            "the current epoch is not settled"
        );
        assert_eq!(
            lost[0].1.agent.as_deref(),
            Some("a"),
            "named from the state"
        );
        for (t, _) in &lost {
            a.add(t, None);
        }
        assert!(a.settle_epochs_before(2, &counts, |_| None, 0).is_empty());
        a.retire_before(2);
        assert_eq!(a.accounted_total(), 0);
        assert_eq!((a.committed(), a.lost()), (5, 5));
    }
}
