//! Reading the log: filtered queries, the tail, and a paged iterator for export. Finds
//! records through the index ([`super::index`]) up to where it reaches and reads the rest of
//! the newest segments directly; the records themselves always come from the segments. Needs
//! no key.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rusqlite::types::Value;
use secops_common::Verdict;

use super::error::AuditError;
use super::frame::{Frame, FRAME_PREFIX};
use super::index::Index;
use super::paths::AuditPaths;
use super::segment::{self, FrameScanner, ScanError, SegmentRef};
use super::store::decode_record_frame;
use super::Record;

/// Rows fetched per round trip by [`RecordIter`]: bounds memory on export of huge logs.
const PAGE: usize = 1000;

/// Which records to return. Every set field must match; results are ordered by seq.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryFilter {
    pub agent: Option<String>,
    pub verdict: Option<Verdict>,
    /// An exact action type (`fs:delete`) or a whole category (`fs:*`).
    pub action: Option<String>,
    /// Records with `ts_ns >= since_ns`.
    pub since_ns: Option<i64>,
    /// Records with `ts_ns < until_ns`.
    pub until_ns: Option<i64>,
    /// Records with `seq > after_seq` (for paging).
    pub after_seq: Option<u64>,
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ActionMatch {
    Exact(String),
    /// `category:` prefix; `[lo, hi)` in the index, where every `category:...` string sorts.
    Category(String),
}

fn parse_action(a: &str) -> Result<Option<ActionMatch>, AuditError> {
    let bad = |why: &str| AuditError::InvalidFilter {
        why: format!("action {a:?}: {why}"),
    };
    if a == "*" {
        return Ok(None);
    }
    match a.split_once(':') {
        Some((cat, "*")) if !cat.is_empty() && !cat.contains('*') => {
            Ok(Some(ActionMatch::Category(cat.to_owned())))
        }
        Some((cat, name)) if !cat.is_empty() && !name.is_empty() && !a.contains('*') => {
            Ok(Some(ActionMatch::Exact(a.to_owned())))
        }
        _ => Err(bad("expected category:action or category:*")),
    }
}

/// A filter checked once and ready to use, in SQL and on records.
struct Compiled {
    filter: QueryFilter,
    action: Option<ActionMatch>,
}

impl Compiled {
    fn new(filter: &QueryFilter) -> Result<Compiled, AuditError> {
        let action = filter
            .action
            .as_deref()
            .map(parse_action)
            .transpose()?
            .flatten();
        Ok(Compiled {
            filter: filter.clone(),
            action,
        })
    }

    fn matches(&self, r: &Record) -> bool {
        let f = &self.filter;
        let b = &r.body;
        f.agent.as_ref().is_none_or(|a| b.agent.as_ref() == Some(a))
            && f.verdict.is_none_or(|v| b.verdict == v)
            && match &self.action {
                None => true,
                Some(ActionMatch::Exact(a)) => &b.action == a,
                Some(ActionMatch::Category(c)) => {
                    b.action.split_once(':').is_some_and(|(cat, _)| cat == c)
                }
            }
            && f.since_ns.is_none_or(|t| b.ts_ns >= t)
            && f.until_ns.is_none_or(|t| b.ts_ns < t)
            && f.after_seq.is_none_or(|s| r.seq > s)
    }

    /// The WHERE clause (without ORDER/LIMIT) and its parameters, for seqs in `(lo, hi]`.
    fn where_clause(&self, lo: u64, hi: u64) -> (String, Vec<Value>) {
        let mut sql = String::from(" WHERE seq > ? AND seq <= ?");
        let mut params = vec![
            Value::Integer(i64::try_from(lo).unwrap_or(i64::MAX)),
            Value::Integer(i64::try_from(hi).unwrap_or(i64::MAX)),
        ];
        let f = &self.filter;
        if let Some(agent) = &f.agent {
            sql.push_str(" AND agent = ?");
            params.push(Value::Text(agent.clone()));
        }
        if let Some(v) = f.verdict {
            sql.push_str(" AND verdict = ?");
            params.push(Value::Text(v.as_str().to_owned()));
        }
        match &self.action {
            None => {}
            Some(ActionMatch::Exact(a)) => {
                sql.push_str(" AND action = ?");
                params.push(Value::Text(a.clone()));
            }
            Some(ActionMatch::Category(c)) => {
                // ';' is the character after ':', so [cat:, cat;) holds exactly cat:<anything>.
                sql.push_str(" AND action >= ? AND action < ?");
                params.push(Value::Text(format!("{c}:")));
                params.push(Value::Text(format!("{c};")));
            }
        }
        if let Some(t) = f.since_ns {
            sql.push_str(" AND ts_ns >= ?");
            params.push(Value::Integer(t));
        }
        if let Some(t) = f.until_ns {
            sql.push_str(" AND ts_ns < ?");
            params.push(Value::Integer(t));
        }
        (sql, params)
    }
}

/// Read-only access to the log.
pub struct AuditReader {
    paths: AuditPaths,
    log_id: [u8; 16],
    index: Option<Index>,
    files: std::cell::RefCell<HashMap<u64, File>>,
}

impl AuditReader {
    /// Opens the log; brings the index up to date first where this process may write it.
    pub fn open(paths: &AuditPaths) -> Result<AuditReader, AuditError> {
        let segments = live_segments(paths)?;
        let first = segments.first().ok_or_else(|| AuditError::Missing {
            path: paths.audit_dir.clone(),
        })?;
        let (header, _) = segment::read_header(&first.path)?;
        let log_id = header.log_id;
        let hex_id = hex::encode(log_id);
        let index = match Index::open_rw(paths, &hex_id).and_then(|mut ix| {
            ix.catch_up(&paths.audit_dir)?;
            Ok(ix)
        }) {
            Ok(ix) => Some(ix),
            Err(e) => {
                tracing::debug!("audit index not updated ({e}); reading it as it is");
                Index::open_read_only(paths).filter(|ix| ix.log_id == hex_id)
            }
        };
        Ok(AuditReader {
            paths: paths.clone(),
            log_id,
            index,
            files: Default::default(),
        })
    }

    /// The log id, hex.
    pub fn log_id(&self) -> String {
        hex::encode(self.log_id)
    }

    /// Highest seq in the log (0 if empty).
    pub fn last_seq(&self) -> Result<u64, AuditError> {
        let mut last = self.indexed_upto();
        self.scan_tail(|r| {
            last = last.max(r.seq);
            true
        })?;
        Ok(last)
    }

    /// Matching records in seq order (at most `filter.limit`).
    pub fn query(&self, filter: &QueryFilter) -> Result<Vec<Record>, AuditError> {
        self.iter(filter)?.collect()
    }

    /// The last `n` records, oldest first.
    pub fn tail(&self, n: usize) -> Result<Vec<Record>, AuditError> {
        self.tail_matching(&QueryFilter::default(), n)
    }

    /// The last `n` records that match (`filter.limit` is ignored), oldest first.
    pub fn tail_matching(&self, filter: &QueryFilter, n: usize) -> Result<Vec<Record>, AuditError> {
        let c = Compiled::new(filter)?;
        let mut newest: VecDeque<Record> = VecDeque::with_capacity(n.min(4096));
        if n == 0 {
            return Ok(Vec::new());
        }
        self.scan_tail(|r| {
            if c.matches(&r) {
                if newest.len() == n {
                    newest.pop_front();
                }
                newest.push_back(r);
            }
            true
        })?;
        let mut out: Vec<Record> = Vec::new();
        if newest.len() < n {
            if let Some(ix) = &self.index {
                let lo = self.window_floor(ix, &c)?;
                let (sql, params) = c.where_clause(lo, self.indexed_upto());
                for (seq, seg, off) in ix.locate(&sql, params, true, n - newest.len())? {
                    out.push(self.read_checked(&c, seq, seg, off)?);
                }
                out.reverse();
            }
        }
        out.extend(newest);
        Ok(out)
    }

    /// Streams matching records in seq order, a page at a time, so exporting a large log does
    /// not hold it in memory.
    pub fn iter(&self, filter: &QueryFilter) -> Result<RecordIter<'_>, AuditError> {
        let compiled = Compiled::new(filter)?;
        Ok(RecordIter {
            reader: self,
            compiled,
            remaining: filter.limit,
            buf: VecDeque::new(),
            done: false,
        })
    }

    /// Every record in seq order (for export).
    pub fn read_all(&self) -> Result<RecordIter<'_>, AuditError> {
        self.iter(&QueryFilter::default())
    }

    /// Every checkpoint in the log's segments, oldest first (`verify` judges them).
    pub fn checkpoints(&self) -> Result<Vec<super::Checkpoint>, AuditError> {
        let mut out = Vec::new();
        for seg in live_segments(&self.paths)? {
            let (frames, _) = segment::read_frames(&seg.path)?;
            out.extend(frames.into_iter().filter_map(|f| match f.frame {
                Ok(Frame::Checkpoint(c)) => Some(c),
                _ => None,
            }));
        }
        Ok(out)
    }

    fn indexed_upto(&self) -> u64 {
        self.index
            .as_ref()
            .and_then(|ix| ix.resume)
            .map_or(0, |r| r.seq)
    }

    /// The seq below which no record can match the filter's time window.
    fn window_floor(&self, ix: &Index, c: &Compiled) -> Result<u64, AuditError> {
        match c.filter.since_ns {
            Some(t) => Ok(ix.lowest_seq_since(t)?.saturating_sub(1)),
            None => Ok(0),
        }
    }

    /// One page: records after `after`, at most `limit`.
    fn page(&self, c: &Compiled, after: u64, limit: usize) -> Result<Vec<Record>, AuditError> {
        let mut out = Vec::new();
        let upto = self.indexed_upto();
        if let Some(ix) = self.index.as_ref().filter(|_| after < upto) {
            let lo = after.max(self.window_floor(ix, c)?);
            let (sql, params) = c.where_clause(lo, upto);
            for (seq, seg, off) in ix.locate(&sql, params, false, limit)? {
                out.push(self.read_checked(c, seq, seg, off)?);
            }
            if out.len() >= limit {
                return Ok(out);
            }
        }
        let floor = after.max(upto);
        self.scan_tail(|r| {
            if r.seq > floor && c.matches(&r) {
                out.push(r);
            }
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Reads the record the index places at (segment, offset) and checks it is what the
    /// index says: an index out of step with the log is an error, never a wrong answer.
    fn read_checked(
        &self,
        c: &Compiled,
        seq: u64,
        segment_seq: u64,
        offset: u64,
    ) -> Result<Record, AuditError> {
        let path = self.segment_path(segment_seq);
        let stale = |why: &str| AuditError::Corrupt {
            path: self.paths.index.clone(),
            seq: seq as i64,
            why: format!(
                "the index places it at byte {offset} of {}, but {why}; rebuild the index by \
                 removing {} (it is derived from the log)",
                path.display(),
                self.paths.index.display()
            ),
        };
        let mut files = self.files.borrow_mut();
        let file = match files.get(&segment_seq) {
            Some(f) => f,
            None => {
                let f = super::dir::open_read(&path)
                    .map_err(|_| stale("that segment cannot be opened"))?;
                files.entry(segment_seq).or_insert(f)
            }
        };
        let mut prefix = [0u8; FRAME_PREFIX];
        file.read_exact_at(&mut prefix, offset)
            .map_err(|_| stale("nothing is there"))?;
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len > super::frame::MAX_FRAME_PAYLOAD {
            return Err(stale("no frame starts there"));
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, offset + FRAME_PREFIX as u64)
            .map_err(|_| stale("the frame there is cut short"))?;
        let Ok(Frame::Record(frame)) = Frame::decode(prefix[4], &payload) else {
            return Err(stale("no record is there"));
        };
        let record = decode_record_frame(&frame, &path)?;
        if record.seq != seq || !c.matches(&record) {
            return Err(stale(
                "the record there is another or does not match what the index says",
            ));
        }
        Ok(record)
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.paths
            .audit_dir
            .join(segment::segment_file_name(first_seq))
    }

    /// Calls `each` for every record after the index's reach, in order, until it returns
    /// false.
    fn scan_tail(&self, mut each: impl FnMut(Record) -> bool) -> Result<(), AuditError> {
        let resume = self.index.as_ref().and_then(|ix| ix.resume);
        for seg in live_segments(&self.paths)? {
            let start = match resume {
                Some(r) if seg.first_seq < r.segment => continue,
                Some(r) if seg.first_seq == r.segment => r.offset,
                _ => 0,
            };
            let mut scanner = FrameScanner::open_at(&seg.path, start)?;
            loop {
                match scanner.next_frame() {
                    Ok(Some(s)) => {
                        if let Ok(Frame::Record(r)) = s.frame {
                            if !each(decode_record_frame(&r, &seg.path)?) {
                                return Ok(());
                            }
                        }
                    }
                    Ok(None) | Err(ScanError::Torn { .. }) | Err(ScanError::BadLength { .. }) => {
                        break
                    }
                    Err(ScanError::Io(e)) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// The log's segments, or why there is no log to read.
fn live_segments(paths: &AuditPaths) -> Result<Vec<SegmentRef>, AuditError> {
    match std::fs::symlink_metadata(&paths.audit_dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(paths.legacy_db()).is_ok() {
                return Err(AuditError::LegacyLog {
                    path: paths.legacy_db(),
                    audit_dir: paths.audit_dir.clone(),
                });
            }
            return Err(AuditError::Missing {
                path: paths.audit_dir.clone(),
            });
        }
        Err(e) => return Err(AuditError::io(&paths.audit_dir, "opening the audit log", e)),
    }
    segment::list_segments(&paths.audit_dir)
}

/// Paged iterator over records; see [`AuditReader::iter`].
pub struct RecordIter<'a> {
    reader: &'a AuditReader,
    compiled: Compiled,
    remaining: Option<usize>,
    buf: VecDeque<Record>,
    done: bool,
}

impl RecordIter<'_> {
    fn refill(&mut self) -> Result<(), AuditError> {
        let page = self.remaining.map_or(PAGE, |r| r.min(PAGE));
        if page == 0 {
            self.done = true;
            return Ok(());
        }
        let after = self.compiled.filter.after_seq.unwrap_or(0);
        let rows = self.reader.page(&self.compiled, after, page)?;
        if rows.len() < page {
            self.done = true;
        }
        if let Some(last) = rows.last() {
            self.compiled.filter.after_seq = Some(last.seq);
        }
        if let Some(r) = self.remaining.as_mut() {
            *r -= rows.len();
        }
        self.buf.extend(rows);
        Ok(())
    }
}

impl Iterator for RecordIter<'_> {
    type Item = Result<Record, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            if let Err(e) = self.refill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.buf.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_patterns() {
        assert_eq!(
            parse_action("fs:delete").unwrap(),
            Some(ActionMatch::Exact("fs:delete".into()))
        );
        assert_eq!(
            parse_action("fs:*").unwrap(),
            Some(ActionMatch::Category("fs".into()))
        );
        assert!(matches!(parse_action("*"), Ok(None)));
        for bad in ["fs", ":x", "fs:", "f*:x", "fs:de*"] {
            assert!(parse_action(bad).is_err(), "{bad}");
        }
    }
}
