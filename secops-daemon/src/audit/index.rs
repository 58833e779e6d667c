//! The index: an SQLite file beside the segments, derived from them and built behind the
//! writer, so queries find records without reading the log and appends never wait for it.
//!
//! It holds what queries filter on (seq, time, agent, action, verdict) and where each record
//! sits (segment, byte offset); the records themselves are read from the segments, and every
//! one is checked against the filter again, so an index edited by hand can hide a record from
//! a query but never make it return a record that does not match (`verify` checks the index
//! against the log). Being derived, it is written with `synchronous=NORMAL` and rebuilt from
//! the segments when it is missing, unreadable, or belongs to another log.
//!
//! Time windows: a record's time is its producer's, so time is not monotonic in seq. Every
//! indexing batch stores the running maximum of record times up to its end (`time_marks`,
//! monotonic); the first batch whose running maximum reaches `since` bounds the seqs a window
//! can hold from below, so `--since 1h` reads about an hour of the agent's records, whatever
//! the log's size.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};

use super::error::AuditError;
use super::frame::Frame;
use super::paths::AuditPaths;
use super::segment::{self, FrameScanner, ScanError};

const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE records (
    seq     INTEGER PRIMARY KEY,
    ts_ns   INTEGER NOT NULL,
    agent   TEXT,
    action  TEXT NOT NULL,
    verdict TEXT NOT NULL,
    segment INTEGER NOT NULL,
    offset  INTEGER NOT NULL
);
CREATE INDEX records_agent   ON records(agent, seq);
CREATE INDEX records_verdict ON records(verdict, seq);
CREATE INDEX records_action  ON records(action, seq);
CREATE TABLE time_marks (
    first_seq INTEGER PRIMARY KEY,
    max_ts    INTEGER NOT NULL
);
CREATE INDEX time_marks_ts ON time_marks(max_ts);
";

/// Records per index transaction while catching up.
const CATCH_UP_BATCH: usize = 8192;

/// Where indexing stopped: the next frame to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The first seq of the segment (its name).
    pub segment: u64,
    pub offset: u64,
    /// Highest seq indexed (0: none).
    pub seq: u64,
    /// The running maximum of record times up to `seq`.
    pub max_ts: i64,
}

/// An open index.
pub struct Index {
    conn: Connection,
    path: PathBuf,
    /// The log the index belongs to, hex.
    pub log_id: String,
    pub resume: Option<Resume>,
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
    move |e| AuditError::sqlite(path, e)
}

impl Index {
    /// Opens the index for writing, creating or rebuilding it when it cannot be used for the
    /// log `log_id`.
    pub fn open_rw(paths: &AuditPaths, log_id: &str) -> Result<Index, AuditError> {
        match Index::try_open_rw(&paths.index, log_id) {
            Ok(ix) => Ok(ix),
            Err(e) => {
                tracing::warn!(index = %paths.index.display(), "rebuilding the audit index: {e}");
                for suffix in ["", "-wal", "-shm"] {
                    let p = PathBuf::from(format!("{}{suffix}", paths.index.display()));
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(AuditError::io(&p, "removing the stale index", e)),
                    }
                }
                Index::try_open_rw(&paths.index, log_id)
            }
        }
    }

    fn try_open_rw(path: &Path, log_id: &str) -> Result<Index, AuditError> {
        let err = sql(path);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(&err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(&err)?;
        let has_meta: bool = conn
            .query_row(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map_err(&err)?
            .is_some();
        if !has_meta {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'); \
                 INSERT INTO meta VALUES ('log_id', '{log_id}'); COMMIT;"
            ))
            .map_err(&err)?;
        }
        let mut ix = Index::from_conn(conn, path)?;
        if ix.log_id != log_id {
            return Err(AuditError::NotAnAuditLog {
                path: path.to_owned(),
                why: format!("the index is of log {}, not {log_id}", ix.log_id),
            });
        }
        ix.resume = read_resume(&ix.conn, path)?;
        Ok(ix)
    }

    /// Opens an existing index read-only; `None` if there is none (or it cannot be used).
    pub fn open_read_only(paths: &AuditPaths) -> Option<Index> {
        let path = &paths.index;
        if !path.exists() {
            return None;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .ok()?;
        conn.busy_timeout(Duration::from_secs(5)).ok()?;
        Index::from_conn(conn, path).ok()
    }

    fn from_conn(conn: Connection, path: &Path) -> Result<Index, AuditError> {
        let err = sql(path);
        let get = |key: &str| -> Result<Option<String>, AuditError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(&err)
        };
        if get("schema_version")?.as_deref() != Some(SCHEMA_VERSION) {
            return Err(AuditError::UnsupportedVersion {
                path: path.to_owned(),
                found: get("schema_version")?.unwrap_or_default(),
                supported: 1,
            });
        }
        let log_id = get("log_id")?.unwrap_or_default();
        let resume = read_resume(&conn, path)?;
        Ok(Index {
            conn,
            path: path.to_owned(),
            log_id,
            resume,
        })
    }

    /// Indexes every record the segments hold after the resume point. Returns how many.
    pub fn catch_up(&mut self, audit_dir: &Path) -> Result<u64, AuditError> {
        let mut total = 0;
        loop {
            let n = self.catch_up_batch(audit_dir, CATCH_UP_BATCH)?;
            total += n;
            if n < CATCH_UP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    fn catch_up_batch(&mut self, audit_dir: &Path, limit: usize) -> Result<u64, AuditError> {
        let path = self.path.clone();
        let err = sql(&path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&err)?;
        let segments = segment::list_segments(audit_dir)?;
        let Some(first) = segments.first() else {
            return Ok(0);
        };
        let mut resume = read_resume(&tx, &path)?.unwrap_or(Resume {
            segment: first.first_seq,
            offset: 0,
            seq: 0,
            max_ts: i64::MIN,
        });
        let first_seq_of_batch = resume.seq + 1;
        let mut n = 0u64;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO records (seq, ts_ns, agent, action, verdict, segment, offset) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(&err)?;
            let from = resume.segment;
            'segments: for seg in segments.iter().filter(|s| s.first_seq >= from) {
                if seg.first_seq > resume.segment {
                    resume.segment = seg.first_seq;
                    resume.offset = 0;
                }
                let mut scanner = FrameScanner::open_at(&seg.path, resume.offset)?;
                loop {
                    let offset = scanner.offset();
                    let scanned = match scanner.next_frame() {
                        Ok(Some(s)) => s,
                        // The end, a batch in flight, or damage (`verify`'s to judge).
                        Ok(None)
                        | Err(ScanError::Torn { .. })
                        | Err(ScanError::BadLength { .. }) => {
                            resume.offset = offset;
                            continue 'segments;
                        }
                        Err(ScanError::Io(e)) => return Err(e),
                    };
                    resume.offset = scanner.offset();
                    let Ok(Frame::Record(r)) = scanned.frame else {
                        continue;
                    };
                    // A record that does not decode is not indexed: `verify` names it, and a
                    // query that reaches it through the tail fails naming it.
                    let Ok((seq, body)) = super::chain::decode_record(&r.encoding) else {
                        continue;
                    };
                    insert
                        .execute(params![
                            seq as i64,
                            body.ts_ns,
                            body.agent,
                            body.action,
                            body.verdict.as_str(),
                            seg.first_seq as i64,
                            scanned.offset as i64,
                        ])
                        .map_err(&err)?;
                    resume.seq = seq;
                    resume.max_ts = resume.max_ts.max(body.ts_ns);
                    n += 1;
                    if n as usize >= limit {
                        break 'segments;
                    }
                }
            }
        }
        if n > 0 {
            tx.execute(
                "INSERT OR REPLACE INTO time_marks (first_seq, max_ts) VALUES (?1, ?2)",
                params![first_seq_of_batch as i64, resume.max_ts],
            )
            .map_err(&err)?;
        }
        write_resume(&tx, &path, &resume)?;
        tx.commit().map_err(&err)?;
        self.resume = Some(resume);
        Ok(n)
    }

    /// Drops the rows of records in a segment that was moved out of the log (archived).
    pub fn forget_segment(&mut self, first_seq: u64) -> Result<(), AuditError> {
        self.conn
            .execute("DELETE FROM records WHERE segment = ?1", [first_seq as i64])
            .map_err(sql(&self.path))?;
        Ok(())
    }

    /// The lowest seq a record with time `>= since_ns` can have (from the time marks).
    pub fn lowest_seq_since(&self, since_ns: i64) -> Result<u64, AuditError> {
        let s: Option<i64> = self
            .conn
            .query_row(
                "SELECT first_seq FROM time_marks WHERE max_ts >= ?1 ORDER BY max_ts LIMIT 1",
                [since_ns],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql(&self.path))?;
        Ok(match s {
            Some(s) => u64::try_from(s).unwrap_or(0),
            // Nothing indexed reaches `since`: only the unindexed tail can.
            None => self.resume.map_or(0, |r| r.seq + 1),
        })
    }

    /// Where matching rows sit: `(seq, segment, offset)` in seq order (descending if asked).
    pub fn locate(
        &self,
        where_sql: &str,
        params: Vec<Value>,
        descending: bool,
        limit: usize,
    ) -> Result<Vec<(u64, u64, u64)>, AuditError> {
        let order = if descending { "DESC" } else { "ASC" };
        let sql_text = format!(
            "SELECT seq, segment, offset FROM records{where_sql} ORDER BY seq {order} LIMIT {limit}"
        );
        let err = sql(&self.path);
        let mut stmt = self.conn.prepare_cached(&sql_text).map_err(&err)?;
        let rows = stmt
            .query_map(params_from_iter(params), |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(&err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&err)
    }
}

fn read_resume(conn: &Connection, path: &Path) -> Result<Option<Resume>, AuditError> {
    let get = |key: &str| -> Result<Option<i64>, AuditError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(sql(path))
        .map(|v| v.and_then(|v| v.parse().ok()))
    };
    let (Some(segment), Some(offset), Some(seq), Some(max_ts)) = (
        get("resume_segment")?,
        get("resume_offset")?,
        get("resume_seq")?,
        get("resume_max_ts")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Resume {
        segment: segment as u64,
        offset: offset as u64,
        seq: seq as u64,
        max_ts,
    }))
}

fn write_resume(conn: &Connection, path: &Path, r: &Resume) -> Result<(), AuditError> {
    let mut put = conn
        .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
        .map_err(sql(path))?;
    for (k, v) in [
        ("resume_segment", r.segment as i64),
        ("resume_offset", r.offset as i64),
        ("resume_seq", r.seq as i64),
        ("resume_max_ts", r.max_ts),
    ] {
        put.execute(params![k, v.to_string()]).map_err(sql(path))?;
    }
    Ok(())
}
