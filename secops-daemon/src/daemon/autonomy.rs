//! Live autonomy: the levels people (or repeated denials) set, which win over the policy file,
//! and the per-agent denial windows that lower an agent automatically.
//!
//! Overrides live in `<state>/autonomy.json`, rewritten atomically on every change, so they
//! survive reloads (they are applied on top of every policy loaded) and restarts. A file that
//! cannot be read is a start-up error: silently starting without it could hand an agent that
//! was lowered for misbehaving its old, higher autonomy back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use secops_common::AutonomyLevel;
use serde::{Deserialize, Serialize};

use crate::api::AutonomyOverride;
use crate::policy::{AutoLower, Policy};

pub(crate) const FILE_NAME: &str = "autonomy.json";

#[derive(Debug, thiserror::Error)]
pub(crate) enum AutonomyFileError {
    #[error("reading the autonomy overrides {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the autonomy overrides {} are corrupt ({source}); fix or remove the file (removing it \
         returns every agent to the policy's autonomy)",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing the autonomy overrides {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A level set by a person or by secops itself, in force until a person changes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Override {
    pub(crate) level: AutonomyLevel,
    /// Who set it: a caller's description, or `secops` for an automatic lowering.
    pub(crate) set_by: String,
    pub(crate) set_at_ns: i64,
    pub(crate) reason: String,
    /// Set by secops after repeated denials, not by a person.
    #[serde(default)]
    pub(crate) automatic: bool,
}

impl Override {
    /// The level in force over the policy's. A person's choice wins either way; an automatic
    /// lowering is only a ceiling, so a policy edited to be stricter still takes effect (it
    /// must never leave an agent more trusted than a person wrote).
    pub(crate) fn applied_to(&self, policy_level: AutonomyLevel) -> AutonomyLevel {
        if self.automatic {
            self.level.max(policy_level)
        } else {
            self.level
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    version: u32,
    agents: BTreeMap<String, Override>,
}

/// The overrides and the file they are kept in.
#[derive(Debug)]
pub(crate) struct Overrides {
    path: PathBuf,
    agents: BTreeMap<String, Override>,
}

impl Overrides {
    pub(crate) fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE_NAME)
    }

    /// Reads the overrides; a missing file means none.
    pub(crate) fn load(path: &Path) -> Result<Overrides, AutonomyFileError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Overrides {
                    path: path.to_owned(),
                    agents: BTreeMap::new(),
                })
            }
            Err(source) => {
                return Err(AutonomyFileError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let file: FileFormat =
            serde_json::from_slice(&bytes).map_err(|source| AutonomyFileError::Corrupt {
                path: path.to_owned(),
                source,
            })?;
        if file.version != 1 {
            return Err(AutonomyFileError::Corrupt {
                path: path.to_owned(),
                source: serde::de::Error::custom(format!(
                    "unsupported version {} (this secops writes version 1)",
                    file.version
                )),
            });
        }
        Ok(Overrides {
            path: path.to_owned(),
            agents: file.agents,
        })
    }

    pub(crate) fn get(&self, agent: &str) -> Option<&Override> {
        self.agents.get(agent)
    }

    /// Sets (`Some`) or clears (`None`) an agent's override and writes the file; on a failed
    /// write nothing changes, in memory or on disk.
    pub(crate) fn set(
        &mut self,
        agent: &str,
        value: Option<Override>,
    ) -> Result<(), AutonomyFileError> {
        let previous = match value {
            Some(v) => self.agents.insert(agent.to_owned(), v),
            None => self.agents.remove(agent),
        };
        if let Err(e) = self.save() {
            match previous {
                Some(p) => self.agents.insert(agent.to_owned(), p),
                None => self.agents.remove(agent),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Write to a temporary file, fsync, rename over the old one, fsync the directory: a
    /// crash leaves either the old file or the new one, never half of one.
    fn save(&self) -> Result<(), AutonomyFileError> {
        let err = |source| AutonomyFileError::Write {
            path: self.path.clone(),
            source,
        };
        let body = serde_json::to_vec_pretty(&FileFormat {
            version: 1,
            agents: self.agents.clone(),
        })
        .map_err(|e| err(std::io::Error::other(e)))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(&body).map_err(err)?;
        file.sync_all().map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    /// The overrides of agents the policy names (the others change nothing).
    pub(crate) fn in_force<'a>(
        &'a self,
        policy: &'a Policy,
    ) -> impl Iterator<Item = (&'a str, &'a Override)> + 'a {
        self.agents
            .iter()
            .filter(|(name, _)| policy.agent(name).is_some())
            .map(|(name, o)| (name.as_str(), o))
    }

    /// The policy with every override in force. Overrides for agents the policy no longer
    /// names are kept (the agent may come back) but change nothing.
    pub(crate) fn apply(&self, policy: &Policy) -> Policy {
        let mut effective = policy.clone();
        for agent in &mut effective.agents {
            if let Some(o) = self.agents.get(&agent.name) {
                agent.autonomy = o.applied_to(agent.autonomy);
            }
        }
        effective
    }
}

/// What is in force: the policy as loaded, and the overrides on top of it.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) policy: Arc<Policy>,
    pub(crate) overrides: Overrides,
}

impl Live {
    pub(crate) fn effective(&self) -> Policy {
        self.overrides.apply(&self.policy)
    }

    /// The agent's level as the engine has it now.
    pub(crate) fn level_of(&self, agent: &str) -> Option<AutonomyLevel> {
        let policy_level = self.policy.agent(agent)?.autonomy;
        Some(
            self.overrides
                .get(agent)
                .map_or(policy_level, |o| o.applied_to(policy_level)),
        )
    }

    pub(crate) fn view(&self) -> View {
        View {
            policy_levels: self
                .policy
                .agents
                .iter()
                .map(|a| (a.name.clone(), a.autonomy))
                .collect(),
            overrides: self
                .overrides
                .in_force(&self.policy)
                .map(|(name, o)| (name.to_owned(), o.clone()))
                .collect(),
        }
    }
}

/// A copy of what status reports need, so no lock is held while cgroups are read.
#[derive(Debug, Default)]
pub(crate) struct View {
    policy_levels: HashMap<String, AutonomyLevel>,
    overrides: HashMap<String, Override>,
}

impl View {
    /// The policy's level (`None`: the agent is gone from the policy) and the override.
    pub(crate) fn of(&self, agent: &str) -> (Option<AutonomyLevel>, Option<AutonomyOverride>) {
        (
            self.policy_levels.get(agent).copied(),
            self.overrides.get(agent).map(|o| AutonomyOverride {
                set_by: o.set_by.clone(),
                set_at_ns: o.set_at_ns,
                reason: o.reason.clone(),
            }),
        )
    }
}

/// Recent denials per agent, at most one threshold's worth each.
#[derive(Debug, Default)]
pub(crate) struct DenialWindows {
    agents: HashMap<String, VecDeque<Instant>>,
}

impl DenialWindows {
    /// Counts one denial of `agent` at `now`. True when this one reaches the threshold within
    /// the window; the count then starts again, so the next lowering takes as many denials.
    pub(crate) fn note(&mut self, agent: &str, rule: &AutoLower, now: Instant) -> bool {
        let window = self.agents.entry(agent.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= rule.within)
        {
            window.pop_front();
        }
        window.push_back(now);
        // A threshold lowered by a reload must not leave more entries than it needs.
        while window.len() > rule.denials as usize {
            window.pop_front();
        }
        if window.len() >= rule.denials as usize {
            window.clear();
            return true;
        }
        false
    }

    /// Counts a denial of `agent` by the policy's `auto_lower` for it (none, or a `locked`
    /// agent: nothing counted). True when this one reaches the threshold.
    pub(crate) fn note_by_policy(&mut self, policy: &Policy, agent: &str, now: Instant) -> bool {
        let Some(spec) = policy.agent(agent) else {
            return false;
        };
        match spec.auto_lower {
            Some(rule) if spec.autonomy != AutonomyLevel::Locked => self.note(agent, &rule, now),
            _ => false,
        }
    }

    /// A person set the agent's level: earlier denials no longer count against it.
    pub(crate) fn reset(&mut self, agent: &str) {
        self.agents.remove(agent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy_str;
    use std::time::Duration;

    fn rule(denials: u32, secs: u64) -> AutoLower {
        AutoLower {
            denials,
            within: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_threshold_counts_only_denials_inside_the_window_then_starts_again() {
        let mut w = DenialWindows::default();
        let r = rule(3, 10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!w.note("a", &r, at(0)));
        assert!(!w.note("a", &r, at(1)));
        // The first has left the window by now (10 s old): two in the window, not three.
        assert!(!w.note("a", &r, at(10)));
        // Three within 10 s: at 1, 10 and 10.5.
        assert!(w.note("a", &r, at(10) + Duration::from_millis(500)));
        // Counting starts again after a lowering.
        assert!(!w.note("a", &r, at(12)));
        assert!(!w.note("a", &r, at(13)));
        assert!(w.note("a", &r, at(14)));
        // Agents are counted apart.
        assert!(!w.note("b", &r, at(14)));
        // A reset forgets what was counted.
        assert!(!w.note("a", &r, at(15)));
        assert!(!w.note("a", &r, at(16)));
        w.reset("a");
        assert!(!w.note("a", &r, at(17)));
        // One denial is enough when the policy says so.
        assert!(w.note("c", &rule(1, 1), at(0)));
    }

    #[test]
    fn overrides_survive_a_reload_and_a_corrupt_file_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("secops-autonomy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = Overrides::path_in(&dir);
        let _ = std::fs::remove_file(&path);
        let policy = parse_policy_str(
            Path::new("p.yaml"),
            "agents:\n  - {name: a, workspace: /a, autonomy: full}\n  - {name: b, workspace: /b, autonomy: semi}\n",
        )
        .unwrap();

        let mut overrides = Overrides::load(&path).unwrap();
        assert_eq!(
            overrides.apply(&policy).agents[0].autonomy,
            AutonomyLevel::Full
        );
        let lowered = Override {
            level: AutonomyLevel::Locked,
            set_by: "pid 1 uid 0 (admin)".into(),
            set_at_ns: 7,
            reason: "testing".into(),
            automatic: false,
        };
        overrides.set("a", Some(lowered.clone())).unwrap();
        overrides.set("gone", Some(lowered.clone())).unwrap();

        // As a restarted daemon sees it.
        let again = Overrides::load(&path).unwrap();
        assert_eq!(again.get("a"), Some(&lowered));
        let effective = again.apply(&policy);
        assert_eq!(effective.agents[0].autonomy, AutonomyLevel::Locked);
        assert_eq!(effective.agents[1].autonomy, AutonomyLevel::Semi);

        // A person may raise an agent above the policy; an automatic lowering never does.
        let raised = Override {
            level: AutonomyLevel::Full,
            ..lowered.clone()
        };
        overrides.set("b", Some(raised.clone())).unwrap();
        assert_eq!(
            overrides.apply(&policy).agents[1].autonomy,
            AutonomyLevel::Full
        );
        let automatic = Override {
            level: AutonomyLevel::Supervised,
            automatic: true,
            ..lowered.clone()
        };
        assert_eq!(
            automatic.applied_to(AutonomyLevel::Semi),
            AutonomyLevel::Supervised
        );
        assert_eq!(
            automatic.applied_to(AutonomyLevel::Locked),
            AutonomyLevel::Locked
        );
        let automatic_full = Override {
            level: AutonomyLevel::Full,
            ..automatic
        };
        overrides.set("b", Some(automatic_full)).unwrap();
        assert_eq!(
            overrides.apply(&policy).agents[1].autonomy,
            AutonomyLevel::Semi
        );

        overrides.set("a", None).unwrap();
        assert_eq!(Overrides::load(&path).unwrap().get("a"), None);

        std::fs::write(
            &path,
            b"{\"version\": 1, \"agents\": {\"a\": {\"level\": \"ful",
        )
        .unwrap();
        let e = Overrides::load(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("corrupt"), "{e}");
        std::fs::write(&path, b"{\"version\": 1, \"agents\": {\"a\": {\"level\": \"root\", \"set_by\": \"x\", \"set_at_ns\": 0, \"reason\": \"\"}}}").unwrap();
        assert!(Overrides::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
