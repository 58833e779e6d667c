//! Counter slots: which (agent, low-risk rule) pair each counter of `secops_file_counts`
//! belongs to. A pair keeps its slot for good, across reloads and restarts (the table is
//! kept in the state directory), so a count the kernel made under one policy is never
//! audited under another's rule, and counts made while no daemon ran are still attributed.

use std::path::{Path, PathBuf};

use secops_common::kernel::{InodeRule, COUNT_SLOTS, FS_OPS, RULE_ALLOW, RULE_ALLOW_COUNTED};
use serde::{Deserialize, Serialize};

use super::files::CompiledFiles;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CountSlotsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a counter slot table ({why}); to start a new one, run `secops teardown` (which empties the kernel's counters) and move it away, or counts still in the kernel would be audited under whichever rules take their slots next")]
    Corrupt { path: PathBuf, why: String },
}

/// Slot `n` (from 1) belongs to `pairs[n - 1]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CountSlots {
    pairs: Vec<SlotOwner>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SlotOwner {
    pub(crate) agent: String,
    pub(crate) rule: String,
}

impl CountSlots {
    pub(crate) fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("count-slots.json")
    }

    /// The table in `path`; empty when there is none yet.
    pub(crate) fn load(path: &Path) -> Result<CountSlots, CountSlotsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CountSlots::default()),
            Err(source) => {
                return Err(CountSlotsError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let slots: CountSlots =
            serde_json::from_str(&text).map_err(|e| CountSlotsError::Corrupt {
                path: path.to_path_buf(),
                why: e.to_string(),
            })?;
        if slots.pairs.len() >= COUNT_SLOTS {
            return Err(CountSlotsError::Corrupt {
                path: path.to_path_buf(),
                why: format!("{} slots, more than the kernel has", slots.pairs.len()),
            });
        }
        Ok(slots)
    }

    /// Written whole to a new file and renamed over the old one.
    pub(crate) fn save(&self, path: &Path) -> Result<(), CountSlotsError> {
        let io = |source| CountSlotsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("json.new");
        let text = serde_json::to_string_pretty(self)
            .map_err(std::io::Error::other)
            .map_err(io)?;
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The slot of (agent, rule): its own, a new one, or `None` when every slot is taken.
    fn slot(&mut self, agent: &str, rule: &str) -> Option<u16> {
        let position = match self
            .pairs
            .iter()
            .position(|p| p.agent == agent && p.rule == rule)
        {
            Some(position) => position,
            None if self.pairs.len() + 1 < COUNT_SLOTS => {
                self.pairs.push(SlotOwner {
                    agent: agent.to_owned(),
                    rule: rule.to_owned(),
                });
                self.pairs.len() - 1
            }
            None => return None,
        };
        u16::try_from(position + 1).ok()
    }

    pub(crate) fn owner(&self, slot: u16) -> Option<&SlotOwner> {
        self.pairs.get(usize::from(slot).checked_sub(1)?)
    }

    /// Gives every counted verdict in `files` its slot in place of its rule. Returns whether
    /// the table grew (then it must be saved before the entries reach the kernel). Should the
    /// slots run out, the verdict is reported one by one instead: nothing goes uncounted.
    pub(crate) fn assign(
        &mut self,
        files: &mut CompiledFiles,
        agent_name: impl Fn(u32) -> Option<String>,
    ) -> bool {
        let before = self.pairs.len();
        let rule_ids = files.rule_ids.clone();
        for (key, rule) in files.entries.iter_mut() {
            let Some(agent) = agent_name(key.agent_index) else {
                continue;
            };
            let InodeRule {
                own,
                child,
                deep,
                own_rule,
                child_rule,
                deep_rule,
            } = rule;
            for (verdicts, rules) in [(own, own_rule), (child, child_rule), (deep, deep_rule)] {
                for op in 0..FS_OPS {
                    if verdicts[op] != RULE_ALLOW_COUNTED {
                        continue;
                    }
                    let rule_id = rule_ids
                        .get(usize::from(rules[op]))
                        .map(|r| r.to_string())
                        .unwrap_or_default();
                    match self.slot(&agent, &rule_id) {
                        Some(slot) => rules[op] = slot,
                        None => verdicts[op] = RULE_ALLOW,
                    }
                }
            }
        }
        self.pairs.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secops_common::kernel::{InodeKey, OP_DELETE, OP_RENAME, RULE_DENY};
    use std::sync::Arc;

    fn files(agent_index: u32, rule: u16) -> CompiledFiles {
        let mut entry = InodeRule::default();
        entry.child[OP_DELETE] = RULE_ALLOW_COUNTED;
        entry.child_rule[OP_DELETE] = rule;
        entry.deep[OP_RENAME] = RULE_ALLOW_COUNTED;
        entry.deep_rule[OP_RENAME] = rule;
        entry.own[OP_DELETE] = RULE_DENY;
        entry.own_rule[OP_DELETE] = rule;
        let mut out = CompiledFiles {
            rule_ids: vec![Arc::from("builtin"), Arc::from("ws"), Arc::from("ws2")],
            ..CompiledFiles::default()
        };
        out.entries.insert(
            InodeKey {
                agent_index,
                dev: 1,
                ino: 2,
            },
            entry,
        );
        out
    }

    #[test]
    fn pairs_keep_their_slots_across_recompiles_and_saves() {
        let name = |i: u32| Some(format!("agent{i}"));
        let mut slots = CountSlots::default();
        let mut a = files(0, 1);
        assert!(slots.assign(&mut a, name));
        let entry = a.entries.values().next().unwrap();
        assert_eq!(entry.child_rule[OP_DELETE], 1);
        assert_eq!(entry.deep_rule[OP_RENAME], 1);
        assert_eq!(entry.own_rule[OP_DELETE], 1, "only counted verdicts change");
        let mut b = files(1, 2);
        assert!(slots.assign(&mut b, name));
        assert_eq!(b.entries.values().next().unwrap().child_rule[OP_DELETE], 2);
        assert_eq!(
            slots.owner(2),
            Some(&SlotOwner {
                agent: "agent1".into(),
                rule: "ws2".into()
            })
        );

        let dir = tempfile::tempdir().unwrap();
        let path = CountSlots::path_in(dir.path());
        slots.save(&path).unwrap();
        let mut reloaded = CountSlots::load(&path).unwrap();
        let mut again = files(0, 1);
        assert!(!reloaded.assign(&mut again, name), "nothing new");
        assert_eq!(
            again.entries.values().next().unwrap().child_rule[OP_DELETE],
            1
        );
        assert_eq!(reloaded.owner(0), None);
        assert_eq!(reloaded.owner(3), None);
    }

    #[test]
    fn a_corrupt_table_is_an_error_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = CountSlots::path_in(dir.path());
        assert_eq!(CountSlots::load(&path).unwrap(), CountSlots::default());
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            CountSlots::load(&path),
            Err(CountSlotsError::Corrupt { .. })
        ));
    }
}
