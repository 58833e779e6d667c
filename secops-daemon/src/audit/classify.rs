//! Naming what was done to a segment where its chain breaks.
//!
//! `verify` walks the chain until the first record that does not verify; everything before it
//! is known good. The record frames of that segment are then looked at together, in file
//! order, to tell the edits an attacker with write access to the file can make apart:
//!
//! - bytes of a record changed: its contents no longer match its hash, but it still links to
//!   its predecessor and its successor links to it → altered;
//! - a record changed and its own hash recomputed: it verifies, but its successor links to a
//!   hash that no longer exists → the predecessor of the first broken link was altered;
//! - records cut out: a seq gap → deleted (exact range); cut out with later records
//!   renumbered: the next record links to a hash that no longer exists, and its contents
//!   verify only under a larger seq → deleted (exact range);
//! - a record put in with later ones renumbered: a later record links straight to the one
//!   before the foreign one(s) → inserted;
//! - records swapped or moved: a record links to another that still exists, and its contents
//!   verify under another seq → reordered (swapping only the contents, keeping the links and
//!   hashes, is recognised by the contents matching the other record's hash);
//! - a break after the last checkpoint that never recovers: a forged or damaged tail.

use std::collections::HashMap;

use super::chain::{self, Hash};
use super::frame::{CheckpointFrame, RecordFrame};
use super::problem::Problem;
use super::record::NewRecord;

/// How far around a displaced record to look for the seq its contents really belong to.
const SEQ_SEARCH_WINDOW: u64 = 4096;
/// How many renumbered-away records to consider when explaining a deletion.
const MAX_SHIFT: u64 = 1 << 16;

/// A record frame as found, decoded leniently.
pub(crate) struct Row {
    /// The seq its encoding claims (`i64::MIN` if it has none).
    pub seq: i64,
    pub prev: Hash,
    pub hash: Hash,
    body: Option<NewRecord>,
}

impl Row {
    pub fn new(frame: &RecordFrame) -> Row {
        let decoded = chain::decode_record(&frame.encoding).ok();
        Row {
            seq: chain::encoded_seq(&frame.encoding)
                .and_then(|s| i64::try_from(s).ok())
                .unwrap_or(i64::MIN),
            prev: frame.prev,
            hash: frame.hash,
            body: decoded.map(|(_, b)| b),
        }
    }

    /// True if the row's stored hash matches its contents taken as record `seq`.
    pub fn content_ok_as(&self, seq: u64) -> bool {
        self.body
            .as_ref()
            .is_some_and(|b| chain::record_hash(&self.prev, seq, b) == self.hash)
    }
}

/// The record frames of one segment, with lookups by hash and by link.
pub(crate) struct Rows<'a> {
    rows: Vec<Row>,
    by_hash: HashMap<Hash, Vec<usize>>,
    by_prev: HashMap<Hash, Vec<usize>>,
    /// What the segment's first record links to (the header's hash).
    start_link: Hash,
    /// The segment's checkpoints and every later one.
    checkpoints: &'a [CheckpointFrame],
    /// Highest seq covered by a sound checkpoint so far.
    sealed_upto: u64,
}

impl<'a> Rows<'a> {
    pub fn new(
        rows: Vec<Row>,
        start_link: Hash,
        checkpoints: &'a [CheckpointFrame],
        sealed_upto: u64,
    ) -> Rows<'a> {
        let mut by_hash: HashMap<Hash, Vec<usize>> = HashMap::new();
        let mut by_prev: HashMap<Hash, Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_hash.entry(r.hash).or_default().push(i);
            by_prev.entry(r.prev).or_default().push(i);
        }
        Rows {
            rows,
            by_hash,
            by_prev,
            start_link,
            checkpoints,
            sealed_upto,
        }
    }

    fn last_seq(&self) -> u64 {
        self.rows
            .iter()
            .map(|r| r.seq)
            .max()
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0)
    }

    /// Explains why row `i`, found where record `e` belongs, does not verify (all rows before
    /// it did; `pred` is what record `e` must link to).
    pub fn classify(&self, i: usize, e: u64, pred: Hash) -> Problem {
        let r = &self.rows[i];
        if r.seq < 1 {
            return Problem::BadSeq { found: r.seq };
        }
        let claimed = r.seq as u64;
        if claimed < e {
            // A second record claiming an earlier seq: a copy of a genuine one moved here, or
            // a foreign one.
            return if r.content_ok_as(claimed) {
                Problem::Reordered { seq: e }
            } else {
                Problem::Inserted { seq: e }
            };
        }
        if claimed > e {
            // A genuine later record moved up, whose predecessor still sits further on.
            let predecessor_later = self
                .by_hash
                .get(&r.prev)
                .is_some_and(|js| js.iter().any(|&j| j > i));
            if predecessor_later && r.content_ok_as(claimed) {
                return Problem::Reordered { seq: e };
            }
            return Problem::Deleted {
                from: e,
                to: claimed - 1,
            };
        }
        let link_ok = r.prev == pred;
        let dup = self.seq_with_hash(&r.hash, e).is_some();
        // Where the record this row links to sits now (0 = the segment start).
        let linked_to: Option<u64> = if link_ok {
            Some(e - 1)
        } else if r.prev == self.start_link {
            Some(0)
        } else {
            self.seq_with_hash(&r.prev, e)
        };
        if let Some(q) = linked_to {
            if !link_ok && q >= e && !dup && self.authentic_elsewhere(r, e, q) {
                return Problem::Reordered { seq: e };
            }
        }
        // The genuine record e (renumbered) still links to e - 1: whatever is at e came in
        // between.
        if self.first_linking_to(&pred, i).is_some() {
            return Problem::Inserted { seq: e };
        }
        if let Some(q) = linked_to {
            if !link_ok && q + 1 < e && !dup {
                return Problem::Inserted { seq: q + 1 };
            }
        }
        if link_ok {
            if self.contents_swapped(r, i) {
                return Problem::Reordered { seq: e };
            }
            return Problem::Altered { seq: e };
        }
        if linked_to.is_none() {
            if r.content_ok_as(e) {
                // Genuine, but links to a hash that is gone: record e - 1 was rewritten with a
                // freshly computed hash. Unless this row's own link was rewritten (hash
                // recomputed), in which case its successor no longer links to it.
                let next_links_here = self.rows.get(i + 1).is_none_or(|n| n.prev == r.hash);
                if e > 1 && next_links_here {
                    return Problem::Altered { seq: e - 1 };
                }
                return Problem::Altered { seq: e };
            }
            if let Some(d) = self.deleted_before(r, e) {
                return Problem::Deleted {
                    from: e,
                    to: e + d - 1,
                };
            }
        }
        if e > self.sealed_upto && !self.recovers_after(i) {
            return Problem::BrokenTail {
                from: e,
                to: self.last_seq().max(e),
            };
        }
        Problem::Altered { seq: e }
    }

    /// The seq of a row other than `not` holding this hash.
    fn seq_with_hash(&self, hash: &Hash, not: u64) -> Option<u64> {
        self.by_hash.get(hash)?.iter().find_map(|&j| {
            let s = u64::try_from(self.rows[j].seq).ok()?;
            (s != not).then_some(s)
        })
    }

    /// A row after position `i` that links to `hash`.
    fn first_linking_to(&self, hash: &Hash, i: usize) -> Option<usize> {
        self.by_prev.get(hash)?.iter().copied().find(|&j| j > i)
    }

    /// True if the row's contents verify under some seq near where it was found or near the
    /// record it links to: a genuine record that was moved.
    fn authentic_elsewhere(&self, r: &Row, e: u64, linked_to: u64) -> bool {
        let near = |c: u64| {
            c.saturating_sub(SEQ_SEARCH_WINDOW).max(1)..=c.saturating_add(SEQ_SEARCH_WINDOW)
        };
        [linked_to + 1, linked_to]
            .into_iter()
            .chain(near(e))
            .chain(near(linked_to))
            .any(|s| s != e && r.content_ok_as(s))
    }

    /// The contents of row `i` are exactly what a later row's hash was computed over, and that
    /// row no longer holds them: two rows swapped contents but kept their hashes.
    fn contents_swapped(&self, r: &Row, i: usize) -> bool {
        let Some(body) = &r.body else { return false };
        self.rows[i + 1..].iter().any(|other| {
            let Ok(seq) = u64::try_from(other.seq) else {
                return false;
            };
            chain::record_hash(&other.prev, seq, body) == other.hash && !other.content_ok_as(seq)
        })
    }

    /// If the row's contents verify as record `e + d` for some d >= 1, records e..e+d-1 were
    /// cut out and the rest renumbered down. Returns d.
    fn deleted_before(&self, r: &Row, e: u64) -> Option<u64> {
        // A checkpoint for seq s whose hash now sits at a lower seq moved down by the number of
        // deleted records.
        if let Some(c) = self.checkpoints.iter().find(|c| c.seq > e) {
            if let Some(now_at) = self.seq_with_hash(&c.hash, 0) {
                if now_at >= e && c.seq > now_at && r.content_ok_as(e + (c.seq - now_at)) {
                    return Some(c.seq - now_at);
                }
            }
        }
        (1..=MAX_SHIFT).find(|d| r.content_ok_as(e + d))
    }

    /// True if some row after position `i` is intact again (verifies and links to the row
    /// before it).
    fn recovers_after(&self, i: usize) -> bool {
        self.rows[i..].windows(2).any(|w| {
            u64::try_from(w[1].seq).is_ok_and(|s| w[1].prev == w[0].hash && w[1].content_ok_as(s))
        })
    }
}
