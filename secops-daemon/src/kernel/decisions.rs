//! The programs' counts of the denials and escalations they reported (`secops_decisions`,
//! see `struct secops_decision_key`): read and retired by the daemon, never written by it.

use aya::maps::{HashMap, Map, MapData, MapInfo};
use secops_common::kernel::{DecisionKey, MAP_DECISIONS};

use super::error::{KernelError, Result};
use super::maps::{Contract, KernelMaps, P};

impl Contract for DecisionKey {}

type Decisions = HashMap<MapData, P<DecisionKey>, u64>;

impl KernelMaps {
    fn decisions(&self) -> Result<Decisions> {
        let conv = |e| KernelError::map(MAP_DECISIONS, "opening pinned map", e);
        let data = MapData::from_pin(self.pin_dir().join(MAP_DECISIONS)).map_err(conv)?;
        HashMap::try_from(Map::from_map_data(data).map_err(conv)?).map_err(conv)
    }

    /// The id of the pinned counter map: counts name the map they were read from, so a map
    /// made anew after a teardown is not taken for the one an earlier daemon counted in.
    pub fn decisions_map_id(&self) -> Result<u32> {
        MapInfo::from_pin(self.pin_dir().join(MAP_DECISIONS))
            .map(|info| info.id())
            .map_err(|e| KernelError::map(MAP_DECISIONS, "reading pinned map info", e))
    }

    /// Every counter, in key order.
    pub fn decision_counts(&self) -> Result<Vec<(DecisionKey, u64)>> {
        let map = self.decisions()?;
        let mut counts = map
            .iter()
            .map(|entry| {
                entry
                    .map(|(key, count)| (key.0, count))
                    .map_err(|e| KernelError::map(MAP_DECISIONS, "reading", e))
            })
            .collect::<Result<Vec<_>>>()?;
        counts.sort();
        Ok(counts)
    }

    /// Removes the counters of epochs before `epoch`, which no program counts in any more
    /// and whose every count the audit log accounts for. Returns how many were removed.
    pub fn retire_decision_epochs_before(&mut self, epoch: u32) -> Result<usize> {
        let mut map = self.decisions()?;
        let old: Vec<DecisionKey> = self
            .decision_counts()?
            .into_iter()
            .filter(|(key, _)| key.epoch < epoch)
            .map(|(key, _)| key)
            .collect();
        for key in &old {
            match map.remove(&P(*key)) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(KernelError::map(MAP_DECISIONS, "removing", e)),
            }
        }
        Ok(old.len())
    }
}
