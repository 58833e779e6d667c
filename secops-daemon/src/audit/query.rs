//! Reading the log: filtered queries, the tail, and a paged iterator for export. Opens the
//! database read-only and needs no key.

use std::collections::VecDeque;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};
use secops_common::Verdict;

use super::error::AuditError;
use super::store::{self, sql_err, AuditPaths, Checkpoint, RawRow, RECORD_COLUMNS};
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

enum ActionMatch {
    Exact(String),
    /// `[lo, hi)`: every `category:...` string sorts in this range, so the index is used.
    Range(String, String),
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
            // ';' is the character after ':', so [cat:, cat;) holds exactly cat:<anything>.
            Ok(Some(ActionMatch::Range(
                format!("{cat}:"),
                format!("{cat};"),
            )))
        }
        Some((cat, name)) if !cat.is_empty() && !name.is_empty() && !a.contains('*') => {
            Ok(Some(ActionMatch::Exact(a.to_owned())))
        }
        _ => Err(bad("expected category:action or category:*")),
    }
}

impl QueryFilter {
    /// The WHERE clause (without ORDER/LIMIT) and its parameters.
    fn where_clause(&self) -> Result<(String, Vec<Value>), AuditError> {
        let mut sql = String::from(" WHERE 1 = 1");
        let mut params = Vec::new();
        if let Some(agent) = &self.agent {
            sql.push_str(" AND agent = ?");
            params.push(Value::Text(agent.clone()));
        }
        if let Some(v) = self.verdict {
            sql.push_str(" AND verdict = ?");
            params.push(Value::Text(v.as_str().to_owned()));
        }
        match self
            .action
            .as_deref()
            .map(parse_action)
            .transpose()?
            .flatten()
        {
            None => {}
            Some(ActionMatch::Exact(a)) => {
                sql.push_str(" AND action = ?");
                params.push(Value::Text(a));
            }
            Some(ActionMatch::Range(lo, hi)) => {
                sql.push_str(" AND action >= ? AND action < ?");
                params.push(Value::Text(lo));
                params.push(Value::Text(hi));
            }
        }
        if let Some(t) = self.since_ns {
            sql.push_str(" AND ts_ns >= ?");
            params.push(Value::Integer(t));
        }
        if let Some(t) = self.until_ns {
            sql.push_str(" AND ts_ns < ?");
            params.push(Value::Integer(t));
        }
        if let Some(s) = self.after_seq {
            sql.push_str(" AND seq > ?");
            params.push(Value::Integer(i64::try_from(s).unwrap_or(i64::MAX)));
        }
        Ok((sql, params))
    }
}

/// Read-only access to the log.
pub struct AuditReader {
    conn: Connection,
    paths: AuditPaths,
    log_id: [u8; 16],
}

impl AuditReader {
    pub fn open(paths: &AuditPaths) -> Result<AuditReader, AuditError> {
        let (conn, meta) = store::open_read_only(paths)?;
        Ok(AuditReader {
            conn,
            paths: paths.clone(),
            log_id: meta.log_id,
        })
    }

    /// The log id, hex.
    pub fn log_id(&self) -> String {
        hex::encode(self.log_id)
    }

    /// Highest seq in the log (0 if empty).
    pub fn last_seq(&self) -> Result<u64, AuditError> {
        let s: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM records", [], |r| r.get(0))
            .map_err(sql_err(&self.paths.db))?;
        Ok(s.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
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
        let (clause, mut params) = filter.where_clause()?;
        params.push(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records{clause} ORDER BY seq DESC LIMIT ?");
        let mut out = self.fetch(&sql, params)?;
        out.reverse();
        Ok(out)
    }

    /// Streams matching records in seq order, a page at a time, so exporting a large log does
    /// not hold it in memory.
    pub fn iter(&self, filter: &QueryFilter) -> Result<RecordIter<'_>, AuditError> {
        // Validate now, so a bad filter is an error here and not the first item.
        filter.where_clause()?;
        Ok(RecordIter {
            reader: self,
            filter: filter.clone(),
            remaining: filter.limit,
            buf: VecDeque::new(),
            done: false,
        })
    }

    /// Every record in seq order (for export).
    pub fn read_all(&self) -> Result<RecordIter<'_>, AuditError> {
        self.iter(&QueryFilter::default())
    }

    /// All checkpoints, oldest first. Unusable rows are skipped (verify reports them).
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        Ok(store::read_checkpoints(&self.conn, &self.paths.db)?
            .into_iter()
            .filter_map(|c| c.into_checkpoint())
            .collect())
    }

    fn fetch(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Record>, AuditError> {
        let err = sql_err(&self.paths.db);
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        let rows = stmt
            .query_map(params_from_iter(params), RawRow::read)
            .map_err(&err)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(&err)?.into_record(&self.paths.db)?);
        }
        Ok(out)
    }
}

/// Paged iterator over records; see [`AuditReader::iter`].
pub struct RecordIter<'a> {
    reader: &'a AuditReader,
    filter: QueryFilter,
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
        let (clause, mut params) = self.filter.where_clause()?;
        params.push(Value::Integer(page as i64));
        let sql = format!("SELECT {RECORD_COLUMNS} FROM records{clause} ORDER BY seq LIMIT ?");
        let rows = self.reader.fetch(&sql, params)?;
        if rows.len() < page {
            self.done = true;
        }
        if let Some(last) = rows.last() {
            self.filter.after_seq = Some(last.seq);
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
        assert!(
            matches!(parse_action("fs:delete"), Ok(Some(ActionMatch::Exact(a))) if a == "fs:delete")
        );
        assert!(
            matches!(parse_action("fs:*"), Ok(Some(ActionMatch::Range(lo, hi))) if lo == "fs:" && hi == "fs;")
        );
        assert!(matches!(parse_action("*"), Ok(None)));
        for bad in ["fs", ":x", "fs:", "f*:x", "fs:de*"] {
            assert!(parse_action(bad).is_err(), "{bad}");
        }
    }
}
