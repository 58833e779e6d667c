//! The DNS door's audit window: the first decision on each (agent, name, type, verdict) in a
//! window is recorded at once; its repeats (a resolver library asking again, A and AAAA,
//! retries) are counted and recorded as one record when the window closes, like allowed
//! connections. An agent asking about more names than [`MAX_NAMES`] in one window (a tunnel
//! made of names) gets the rest counted into one record per verdict with a few of the
//! names, so a flood of queries cannot become a flood of records; and at most
//! [`MAX_TICKETS`] escalations open tickets per window.

use std::collections::{BTreeSet, HashMap};

use secops_common::Verdict;

use crate::audit::NewRecord;
use crate::daemon::decide::Judged;

/// Names itemized per agent and window.
pub(crate) const MAX_NAMES: usize = 1000;
/// Tickets an agent's DNS may open per window.
pub(crate) const MAX_TICKETS: usize = 16;
/// Names (or addresses) an aggregated record lists.
const SAMPLES: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    agent: u32,
    name: String,
    qtype: u16,
    verdict: Verdict,
}

#[derive(Debug)]
struct Seen {
    /// The first decision, as recorded.
    judged: Option<Judged>,
    /// Decisions after the first.
    count: u64,
    first_ns: i64,
    last_ns: i64,
    samples: BTreeSet<String>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            judged: None,
            count: 0,
            first_ns: 0,
            last_ns: 0,
            samples: BTreeSet::new(),
        }
    }

    fn repeat(&mut self, at_ns: i64, samples: &[String]) {
        if self.count == 0 {
            self.first_ns = at_ns;
        }
        self.count += 1;
        self.last_ns = at_ns;
        for s in samples {
            if self.samples.len() >= SAMPLES {
                break;
            }
            self.samples.insert(s.clone());
        }
    }
}

#[derive(Debug, Default)]
struct AgentWindow {
    names: usize,
    tickets: usize,
    overflow: HashMap<Verdict, Seen>,
}

/// What the door does with a decision's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Noted {
    /// Record it now.
    First,
    /// Counted: recorded with the others at the window's end.
    Repeat,
    /// Past [`MAX_NAMES`]: counted into the agent's overflow record.
    Overflow,
}

#[derive(Debug, Default)]
pub(crate) struct Window {
    seen: HashMap<Key, Seen>,
    agents: HashMap<u32, AgentWindow>,
}

impl Window {
    /// Whether the agent's DNS may open another ticket in this window.
    pub(crate) fn may_ask(&self, agent: u32) -> bool {
        self.agents
            .get(&agent)
            .is_none_or(|a| a.tickets < MAX_TICKETS)
    }

    pub(crate) fn ticket_opened(&mut self, agent: u32) {
        self.agents.entry(agent).or_default().tickets += 1;
    }

    /// Notes a decision. `samples`: what an aggregated record should list of it (the
    /// addresses answered).
    pub(crate) fn note(
        &mut self,
        agent: u32,
        name: &str,
        qtype: u16,
        verdict: Verdict,
        at_ns: i64,
        samples: &[String],
    ) -> Noted {
        let key = Key {
            agent,
            name: name.to_owned(),
            qtype,
            verdict,
        };
        if let Some(seen) = self.seen.get_mut(&key) {
            seen.repeat(at_ns, samples);
            return Noted::Repeat;
        }
        let window = self.agents.entry(agent).or_default();
        if window.names >= MAX_NAMES {
            window
                .overflow
                .entry(verdict)
                .or_insert_with(Seen::new)
                .repeat(at_ns, &[name.to_owned()]);
            return Noted::Overflow;
        }
        window.names += 1;
        self.seen.insert(key, Seen::new());
        Noted::First
    }

    /// Keeps the recorded first decision, for the record of its repeats.
    pub(crate) fn recorded(&mut self, agent: u32, name: &str, qtype: u16, judged: &Judged) {
        let key = Key {
            agent,
            name: name.to_owned(),
            qtype,
            verdict: judged.verdict,
        };
        if let Some(seen) = self.seen.get_mut(&key) {
            seen.judged = Some(judged.clone());
        }
    }

    /// Keeps the first overflowing decision of a verdict, for the overflow record.
    pub(crate) fn overflowed(&mut self, agent: u32, judged: &Judged) {
        if let Some(seen) = self
            .agents
            .get_mut(&agent)
            .and_then(|a| a.overflow.get_mut(&judged.verdict))
        {
            seen.judged.get_or_insert_with(|| judged.clone());
        }
    }

    /// Closes the window: the records of every repeat and overflow, and a fresh window.
    pub(crate) fn close(&mut self) -> Vec<NewRecord> {
        let mut records = Vec::new();
        for seen in self.seen.drain().map(|(_, s)| s) {
            if let (Some(judged), true) = (&seen.judged, seen.count > 0) {
                let samples: Vec<&str> = seen.samples.iter().map(String::as_str).collect();
                records.push(judged.repeats_record(
                    seen.count,
                    seen.first_ns,
                    seen.last_ns,
                    &samples.join(", "),
                ));
            }
        }
        for window in self.agents.drain().map(|(_, w)| w) {
            for seen in window.overflow.into_values() {
                let Some(judged) = &seen.judged else { continue };
                let names: Vec<&str> = seen.samples.iter().map(String::as_str).collect();
                records.push(judged.repeats_record(
                    seen.count,
                    seen.first_ns,
                    seen.last_ns,
                    &format!(
                        "queries for other names, not itemized (more than {MAX_NAMES} names in one \
                         window), among them {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_decision_is_recorded_its_repeats_counted_and_a_flood_folded() {
        let mut w = Window::default();
        assert_eq!(
            w.note(1, "a.test", 1, Verdict::Allow, 10, &[]),
            Noted::First
        );
        assert_eq!(
            w.note(1, "a.test", 1, Verdict::Allow, 20, &["10.0.0.1".into()]),
            Noted::Repeat
        );
        // Another type, verdict or agent is another decision.
        assert_eq!(
            w.note(1, "a.test", 28, Verdict::Allow, 20, &[]),
            Noted::First
        );
        assert_eq!(w.note(1, "a.test", 1, Verdict::Deny, 20, &[]), Noted::First);
        assert_eq!(
            w.note(2, "a.test", 1, Verdict::Allow, 20, &[]),
            Noted::First
        );
        for i in 0..MAX_NAMES {
            w.note(3, &format!("n{i}.test"), 16, Verdict::Deny, 30, &[]);
        }
        assert_eq!(
            w.note(3, "over.test", 16, Verdict::Deny, 40, &[]),
            Noted::Overflow
        );
        assert_eq!(w.note(1, "b.test", 1, Verdict::Deny, 40, &[]), Noted::First);
        w.close();
        assert_eq!(
            w.note(1, "a.test", 1, Verdict::Allow, 50, &[]),
            Noted::First,
            "a new window"
        );
    }

    #[test]
    fn tickets_are_capped_per_window() {
        let mut w = Window::default();
        for _ in 0..MAX_TICKETS {
            assert!(w.may_ask(1));
            w.ticket_opened(1);
        }
        assert!(!w.may_ask(1));
        assert!(w.may_ask(2));
        w.close();
        assert!(w.may_ask(1));
    }
}
