//! The SQLite file: schema, opening (read-write or read-only), and appending records with
//! their chain hashes and signed checkpoints in one transaction.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer, SigningKey};
use rand_core::{OsRng, RngCore};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::chain::{self, Hash, LOG_ID_LEN};
use super::error::AuditError;
use super::keys;
use super::record::{AuditObject, NewRecord, Record};

/// Where the audit log keeps its files under the state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditPaths {
    pub state_dir: PathBuf,
    /// `<state>/audit.db` (SQLite, plus `-wal` and `-shm` next to it).
    pub db: PathBuf,
    /// `<state>/keys`, mode 0700.
    pub keys_dir: PathBuf,
    /// `<state>/keys/audit-signing.key`, mode 0600: the Ed25519 seed as hex.
    pub signing_key: PathBuf,
    /// `<state>/keys/audit-signing.pub`: the public key as hex.
    pub public_key: PathBuf,
}

impl AuditPaths {
    pub fn new(state_dir: impl AsRef<Path>) -> AuditPaths {
        let state_dir = state_dir.as_ref().to_path_buf();
        let keys_dir = state_dir.join("keys");
        AuditPaths {
            db: state_dir.join("audit.db"),
            signing_key: keys_dir.join("audit-signing.key"),
            public_key: keys_dir.join("audit-signing.pub"),
            keys_dir,
            state_dir,
        }
    }
}

/// When to seal the chain with a signed checkpoint: after this many records, or when the
/// oldest unsealed record is this old, whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_records: u64,
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_records: 1000,
            every: Duration::from_secs(10),
        }
    }
}

/// A signed statement "record `seq` of log `log_id` had hash `hash` at time `ts_ns`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: u64,
    pub seq: u64,
    pub hash: Hash,
    pub ts_ns: i64,
    pub signature: [u8; 64],
}

/// Identifies this file format; `PRAGMA application_id` ("SCAU").
pub(crate) const APPLICATION_ID: i64 = 0x5343_4155;
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE records (
    seq         INTEGER PRIMARY KEY,
    ts_ns       INTEGER NOT NULL,
    agent       TEXT,
    cgroup_id   INTEGER,
    pid         INTEGER,
    tgid        INTEGER,
    uid         INTEGER,
    comm        TEXT,
    exe         TEXT,
    action      TEXT NOT NULL,
    object_kind TEXT,
    object      TEXT,
    verdict     TEXT NOT NULL,
    risk        TEXT NOT NULL,
    rule_id     TEXT,
    reason      TEXT NOT NULL,
    source      TEXT NOT NULL,
    prev_hash   BLOB NOT NULL,
    hash        BLOB NOT NULL
);
CREATE INDEX records_agent   ON records(agent, seq);
CREATE INDEX records_ts      ON records(ts_ns);
CREATE INDEX records_verdict ON records(verdict, seq);
CREATE INDEX records_action  ON records(action, seq);

CREATE TABLE checkpoints (
    id        INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      BLOB NOT NULL,
    ts_ns     INTEGER NOT NULL,
    signature BLOB NOT NULL
);

-- Not a security boundary (anyone who can write the file can drop these), but it stops
-- accidents and makes tampering a deliberate act; verify catches the deliberate ones.
CREATE TRIGGER records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
";

pub(crate) const TRIGGERS: [&str; 4] = [
    "records_no_update",
    "records_no_delete",
    "checkpoints_no_update",
    "checkpoints_no_delete",
];

/// Column list shared by every reader, in the order `RawRow::read` expects.
pub(crate) const RECORD_COLUMNS: &str = "seq, ts_ns, agent, cgroup_id, pid, tgid, uid, comm, exe, \
     action, object_kind, object, verdict, risk, rule_id, reason, source, prev_hash, hash";

const INSERT_RECORD: &str = "INSERT INTO records (seq, ts_ns, agent, cgroup_id, pid, tgid, uid, \
     comm, exe, action, object_kind, object, verdict, risk, rule_id, reason, source, prev_hash, \
     hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19)";

/// What the `meta` table says about a log.
#[derive(Clone, Debug)]
pub(crate) struct LogMeta {
    pub log_id: [u8; LOG_ID_LEN],
    pub public_key_hex: String,
    pub created_ns: i64,
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Maps SQLite errors so that "this file is not a database at all" reads as such.
pub(crate) fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
    move |e| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => AuditError::NotAnAuditLog {
            path: path.to_owned(),
            why: "the file is not an SQLite database".into(),
        },
        _ => AuditError::sqlite(path, e),
    }
}

enum Probe {
    Fresh,
    Ours,
}

/// Looks at a file before changing anything in it, so that pointing secops at someone
/// else's database never converts it to WAL or adds tables to it.
fn probe(conn: &Connection, path: &Path) -> Result<Probe, AuditError> {
    let err = sql_err(path);
    // One snapshot for both reads, or a log created by another process in between would look
    // like "tables but no application id". A savepoint works inside and outside a transaction.
    conn.execute_batch("SAVEPOINT secops_probe").map_err(&err)?;
    let result = probe_in(conn, path);
    conn.execute_batch("RELEASE secops_probe").map_err(&err)?;
    result
}

fn probe_in(conn: &Connection, path: &Path) -> Result<Probe, AuditError> {
    let err = sql_err(path);
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(&err)?;
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(&err)?;
    let tables = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(&err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(&err)?;
    if app_id == APPLICATION_ID {
        for want in ["meta", "records", "checkpoints"] {
            if !tables.iter().any(|t| t == want) {
                return Err(AuditError::NotAnAuditLog {
                    path: path.to_owned(),
                    why: format!("table {want:?} is missing"),
                });
            }
        }
        return Ok(Probe::Ours);
    }
    if app_id != 0 {
        return Err(AuditError::NotAnAuditLog {
            path: path.to_owned(),
            why: format!("SQLite application id {app_id:#x} belongs to another program"),
        });
    }
    if tables.is_empty() {
        return Ok(Probe::Fresh);
    }
    Err(AuditError::NotAnAuditLog {
        path: path.to_owned(),
        why: format!(
            "it is an SQLite database of something else (tables: {})",
            tables.join(", ")
        ),
    })
}

/// Switching the journal mode needs an exclusive lock and SQLite does not wait for it through
/// the busy handler, so two processes opening a new log at once must retry here.
fn switch_to_wal(conn: &Connection, path: &Path) -> Result<(), AuditError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let busy = match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            // SQLite answers with the old mode when it could not take the lock.
            Ok(mode) => format!("journal mode stayed {mode:?}"),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => e.to_string(),
            Err(e) => return Err(sql_err(path)(e)),
        };
        if Instant::now() >= deadline {
            return Err(AuditError::NotAnAuditLog {
                path: path.to_owned(),
                why: format!("cannot switch to WAL journal mode: {busy}"),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_meta(conn: &Connection, path: &Path) -> Result<LogMeta, AuditError> {
    let err = sql_err(path);
    let get = |key: &str| -> Result<Option<String>, AuditError> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(&err)
    };
    let bad = |why: String| AuditError::NotAnAuditLog {
        path: path.to_owned(),
        why,
    };
    let version = get("schema_version")?.ok_or_else(|| bad("meta has no schema_version".into()))?;
    if version != SCHEMA_VERSION.to_string() {
        return Err(AuditError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let log_id_hex = get("log_id")?.ok_or_else(|| bad("meta has no log_id".into()))?;
    let mut log_id = [0u8; LOG_ID_LEN];
    hex::decode_to_slice(&log_id_hex, &mut log_id).map_err(|e| {
        bad(format!(
            "meta log_id {log_id_hex:?} is not 16 hex bytes: {e}"
        ))
    })?;
    let public_key_hex = get("public_key")?.ok_or_else(|| bad("meta has no public_key".into()))?;
    let created_ns = get("created_ns")?
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| bad("meta has no valid created_ns".into()))?;
    Ok(LogMeta {
        log_id,
        public_key_hex,
        created_ns,
    })
}

fn create_schema(
    conn: &mut Connection,
    path: &Path,
    public_key_hex: &str,
) -> Result<(), AuditError> {
    let err = sql_err(path);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&err)?;
    // Another process may have initialised the file between our probe and the lock.
    if let Probe::Ours = probe(&tx, path)? {
        return Ok(());
    }
    let mut log_id = [0u8; LOG_ID_LEN];
    OsRng.fill_bytes(&mut log_id);
    tx.execute_batch(SCHEMA).map_err(&err)?;
    tx.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
        .map_err(&err)?;
    let mut put = tx
        .prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")
        .map_err(&err)?;
    for (k, v) in [
        ("schema_version", SCHEMA_VERSION.to_string()),
        ("log_id", hex::encode(log_id)),
        ("public_key", public_key_hex.to_owned()),
        ("created_ns", now_ns().to_string()),
    ] {
        put.execute(params![k, v]).map_err(&err)?;
    }
    drop(put);
    tx.commit().map_err(&err)?;
    tracing::info!(db = %path.display(), log_id = %hex::encode(log_id), "created audit log");
    Ok(())
}

/// Opens the log read-only, for queries and verification: never creates, never needs the
/// private key.
pub(crate) fn open_read_only(paths: &AuditPaths) -> Result<(Connection, LogMeta), AuditError> {
    let path = &paths.db;
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AuditError::Missing { path: path.clone() })
        }
        Err(e) => return Err(AuditError::io(path, "opening the audit log", e)),
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sql_err(path))?;
    match probe(&conn, path)? {
        Probe::Ours => {}
        Probe::Fresh => {
            return Err(AuditError::NotAnAuditLog {
                path: path.clone(),
                why: "the database is empty".into(),
            })
        }
    }
    let meta = read_meta(&conn, path)?;
    Ok((conn, meta))
}

/// The write side of the log: one SQLite connection and the signing key.
///
/// Several `AuditStore`s (in one or several processes) may append to the same file: each
/// append takes SQLite's write lock first and reads the chain head under it, so their records
/// interleave into one valid chain.
pub struct AuditStore {
    conn: Connection,
    paths: AuditPaths,
    policy: CheckpointPolicy,
    key: SigningKey,
    log_id: [u8; LOG_ID_LEN],
    genesis: Hash,
    created_ns: i64,
    /// Records after the last checkpoint, as of this store's last transaction.
    unsealed: u64,
    /// When the last checkpoint was made (or the log created), as of the last transaction.
    last_checkpoint_ns: i64,
}

struct Head {
    seq: u64,
    hash: Hash,
    checkpoint_seq: u64,
    checkpoint_ns: i64,
}

impl AuditStore {
    /// Opens (creating on first use) the log and its signing key.
    pub fn open(paths: &AuditPaths, policy: CheckpointPolicy) -> Result<AuditStore, AuditError> {
        let path = &paths.db;
        match DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&paths.state_dir)
        {
            Ok(()) => {}
            Err(e) => {
                return Err(AuditError::io(
                    &paths.state_dir,
                    "creating the state directory",
                    e,
                ))
            }
        }
        let err = sql_err(path);
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(&err)?;
        let fresh = matches!(probe(&conn, path)?, Probe::Fresh);
        // A key is only ever created together with a new log: an existing log whose key went
        // missing must not silently continue under a new key.
        let key = if fresh {
            keys::load_or_create_signing_key(paths)?
        } else {
            keys::load_signing_key(paths)?.ok_or_else(|| AuditError::KeyMismatch {
                path: paths.signing_key.clone(),
                why: format!(
                    "the signing key of the existing audit log {} is missing; restore it \
                     (or move the log aside to start a new one)",
                    path.display()
                ),
            })?
        };
        let public_key_hex = hex::encode(key.verifying_key().as_bytes());
        // WAL: readers (verify, query) never block the writer. synchronous=FULL: a transaction
        // is on disk when COMMIT returns, which is what the writer acknowledges.
        switch_to_wal(&conn, path)?;
        conn.execute_batch("PRAGMA synchronous = FULL")
            .map_err(&err)?;
        if fresh {
            create_schema(&mut conn, path, &public_key_hex)?;
        }
        let meta = read_meta(&conn, path)?;
        if meta.public_key_hex != public_key_hex {
            return Err(AuditError::KeyMismatch {
                path: paths.signing_key.clone(),
                why: format!(
                    "this signing key is not the one the audit log {} was created with \
                     (the log expects public key {})",
                    path.display(),
                    meta.public_key_hex
                ),
            });
        }
        let mut store = AuditStore {
            genesis: chain::genesis_hash(&meta.log_id),
            log_id: meta.log_id,
            created_ns: meta.created_ns,
            conn,
            paths: paths.clone(),
            policy,
            key,
            unsealed: 0,
            last_checkpoint_ns: meta.created_ns,
        };
        let head = store.head_in(&store.conn)?;
        store.note(&head);
        Ok(store)
    }

    pub fn paths(&self) -> &AuditPaths {
        &self.paths
    }

    pub fn policy(&self) -> CheckpointPolicy {
        self.policy
    }

    /// The random id that binds this log's chain and checkpoints to this file.
    pub fn log_id(&self) -> [u8; LOG_ID_LEN] {
        self.log_id
    }

    /// Appends one record; see [`AuditStore::append_batch`].
    pub fn append(&mut self, record: &NewRecord) -> Result<u64, AuditError> {
        let seqs = self.append_batch(std::slice::from_ref(record))?;
        seqs.first()
            .copied()
            .ok_or_else(|| AuditError::CommitFailed {
                path: self.paths.db.clone(),
                reason: "no sequence number assigned".into(),
            })
    }

    /// Appends records in one transaction and returns their sequence numbers. When this
    /// returns `Ok`, the records are durable. Adds a signed checkpoint in the same transaction
    /// when the policy says one is due.
    pub fn append_batch(&mut self, records: &[NewRecord]) -> Result<Vec<u64>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        for r in records {
            chain::validate(r).map_err(|why| AuditError::InvalidRecord { why })?;
        }
        let path = self.paths.db.clone();
        let err = sql_err(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        // Read the head under the write lock: another store may have appended since our last
        // look, and we must link to its last record, not ours.
        let mut head = head_in(&tx, &path, self.genesis, self.created_ns)?;
        let mut seqs = Vec::with_capacity(records.len());
        {
            let mut insert = tx.prepare_cached(INSERT_RECORD).map_err(&err)?;
            for r in records {
                let seq = head.seq + 1;
                let hash = chain::record_hash(&head.hash, seq, r);
                let (object_kind, object) = match &r.object {
                    Some(AuditObject { kind, value }) => {
                        (Some(kind.as_str()), Some(value.as_str()))
                    }
                    None => (None, None),
                };
                insert
                    .execute(params![
                        seq as i64,
                        r.ts_ns,
                        r.agent,
                        // u64 stored as its i64 bit pattern; read back with `as u64`.
                        r.cgroup_id.map(|c| c as i64),
                        r.pid,
                        r.tgid,
                        r.uid,
                        r.comm,
                        r.exe,
                        r.action,
                        object_kind,
                        object,
                        r.verdict.as_str(),
                        r.risk.as_str(),
                        r.rule_id,
                        r.reason,
                        r.source.as_str(),
                        &head.hash[..],
                        &hash[..],
                    ])
                    .map_err(&err)?;
                head.seq = seq;
                head.hash = hash;
                seqs.push(seq);
            }
        }
        let now = now_ns();
        if checkpoint_due(&self.policy, &head, now) {
            let cp = sign_checkpoint(
                &tx,
                &path,
                &self.key,
                &self.log_id,
                head.seq,
                head.hash,
                now,
            )?;
            head.checkpoint_seq = cp.seq;
            head.checkpoint_ns = cp.ts_ns;
        }
        tx.commit().map_err(&err)?;
        self.note(&head);
        Ok(seqs)
    }

    /// Seals everything appended so far with a signed checkpoint, unless it already is.
    /// Returns the new checkpoint, if one was needed.
    pub fn checkpoint_now(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        let path = self.paths.db.clone();
        let err = sql_err(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let mut head = head_in(&tx, &path, self.genesis, self.created_ns)?;
        let mut made = None;
        if head.seq > head.checkpoint_seq {
            let cp = sign_checkpoint(
                &tx,
                &path,
                &self.key,
                &self.log_id,
                head.seq,
                head.hash,
                now_ns(),
            )?;
            head.checkpoint_seq = cp.seq;
            head.checkpoint_ns = cp.ts_ns;
            made = Some(cp);
        }
        tx.commit().map_err(&err)?;
        self.note(&head);
        Ok(made)
    }

    /// How long until unsealed records are due for a checkpoint (zero if overdue), or `None`
    /// if everything is sealed. As of this store's last transaction.
    pub fn seal_due_in(&self) -> Option<Duration> {
        if self.unsealed == 0 {
            return None;
        }
        let age = now_ns().saturating_sub(self.last_checkpoint_ns).max(0) as u64;
        Some(self.policy.every.saturating_sub(Duration::from_nanos(age)))
    }

    /// Records after the last checkpoint, as of this store's last transaction.
    pub fn unsealed(&self) -> u64 {
        self.unsealed
    }

    fn head_in(&self, conn: &Connection) -> Result<Head, AuditError> {
        head_in(conn, &self.paths.db, self.genesis, self.created_ns)
    }

    fn note(&mut self, head: &Head) {
        self.unsealed = head.seq.saturating_sub(head.checkpoint_seq);
        self.last_checkpoint_ns = head.checkpoint_ns;
    }
}

fn checkpoint_due(policy: &CheckpointPolicy, head: &Head, now: i64) -> bool {
    let pending = head.seq.saturating_sub(head.checkpoint_seq);
    if pending == 0 {
        return false;
    }
    let age = now.saturating_sub(head.checkpoint_ns).max(0) as u64;
    pending >= policy.every_records.max(1) || Duration::from_nanos(age) >= policy.every
}

fn head_in(
    conn: &Connection,
    path: &Path,
    genesis: Hash,
    created_ns: i64,
) -> Result<Head, AuditError> {
    let err = sql_err(path);
    let last = conn
        .prepare_cached("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1")
        .map_err(&err)?
        .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .optional()
        .map_err(&err)?;
    let (seq, hash) = match last {
        None => (0, genesis),
        Some((seq, hash)) => {
            let corrupt = |why: &str| AuditError::Corrupt {
                path: path.to_owned(),
                seq,
                why: why.into(),
            };
            let seq = u64::try_from(seq).map_err(|_| corrupt("negative sequence number"))?;
            let hash: Hash = hash
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("hash is not 32 bytes"))?;
            (seq, hash)
        }
    };
    let cp = conn
        .prepare_cached("SELECT seq, ts_ns FROM checkpoints ORDER BY id DESC LIMIT 1")
        .map_err(&err)?
        .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .optional()
        .map_err(&err)?;
    let (checkpoint_seq, checkpoint_ns) = match cp {
        Some((s, t)) => (u64::try_from(s).unwrap_or(0), t),
        None => (0, created_ns),
    };
    Ok(Head {
        seq,
        hash,
        checkpoint_seq,
        checkpoint_ns,
    })
}

fn sign_checkpoint(
    conn: &Connection,
    path: &Path,
    key: &SigningKey,
    log_id: &[u8; LOG_ID_LEN],
    seq: u64,
    hash: Hash,
    ts_ns: i64,
) -> Result<Checkpoint, AuditError> {
    let err = sql_err(path);
    let signature = key
        .sign(&chain::checkpoint_message(log_id, seq, &hash, ts_ns))
        .to_bytes();
    conn.prepare_cached(
        "INSERT INTO checkpoints (seq, hash, ts_ns, signature) VALUES (?1, ?2, ?3, ?4)",
    )
    .map_err(&err)?
    .execute(params![seq as i64, &hash[..], ts_ns, &signature[..]])
    .map_err(&err)?;
    let id = conn.last_insert_rowid() as u64;
    // Also written to the daemon's log: a copy of the checkpoint outside the database lets an
    // auditor notice a log whose tail was cut off together with its checkpoints.
    tracing::info!(
        checkpoint = id,
        seq,
        hash = %hex::encode(hash),
        signature = %hex::encode(signature),
        "audit checkpoint"
    );
    Ok(Checkpoint {
        id,
        seq,
        hash,
        ts_ns,
        signature,
    })
}

/// A record row as stored, decoded leniently: verify must be able to look at rows that were
/// tampered with into something that is no longer a valid record.
pub(crate) struct RawRow {
    pub seq: i64,
    pub body: Result<NewRecord, String>,
    pub prev: Option<Hash>,
    pub hash: Option<Hash>,
}

impl RawRow {
    /// Reads a row selected with [`RECORD_COLUMNS`].
    pub fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            seq: row.get(0)?,
            body: decode_body(row),
            prev: blob32(row.get_ref(17)?),
            hash: blob32(row.get_ref(18)?),
        })
    }

    /// The hash this row's contents would have as record `seq` after its own `prev_hash`.
    pub fn content_hash(&self, seq: u64) -> Option<Hash> {
        let body = self.body.as_ref().ok()?;
        Some(chain::record_hash(self.prev.as_ref()?, seq, body))
    }

    /// True if the row's stored hash matches its contents taken as record `seq`.
    pub fn content_ok_as(&self, seq: u64) -> bool {
        matches!((self.content_hash(seq), self.hash), (Some(a), Some(b)) if a == b)
    }

    pub fn into_record(self, path: &Path) -> Result<Record, AuditError> {
        let corrupt = |why: String| AuditError::Corrupt {
            path: path.to_owned(),
            seq: self.seq,
            why,
        };
        let seq =
            u64::try_from(self.seq).map_err(|_| corrupt("negative sequence number".into()))?;
        let prev_hash = self
            .prev
            .ok_or_else(|| corrupt("prev_hash is not 32 bytes".into()))?;
        let hash = self
            .hash
            .ok_or_else(|| corrupt("hash is not 32 bytes".into()))?;
        let body = self.body.map_err(corrupt)?;
        Ok(Record {
            seq,
            body,
            prev_hash,
            hash,
        })
    }
}

fn blob32(v: ValueRef<'_>) -> Option<Hash> {
    match v {
        ValueRef::Blob(b) => b.try_into().ok(),
        _ => None,
    }
}

fn col_name(i: usize) -> &'static str {
    RECORD_COLUMNS.split(", ").nth(i).unwrap_or("?")
}

fn opt_int(row: &rusqlite::Row<'_>, i: usize) -> Result<Option<i64>, String> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(v) => Ok(Some(v)),
        other => Err(format!(
            "{} is {:?}, not an integer",
            col_name(i),
            other.data_type()
        )),
    }
}

fn opt_text(row: &rusqlite::Row<'_>, i: usize) -> Result<Option<String>, String> {
    match row.get_ref(i).map_err(|e| e.to_string())? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => String::from_utf8(t.to_vec())
            .map(Some)
            .map_err(|_| format!("{} is not UTF-8", col_name(i))),
        other => Err(format!(
            "{} is {:?}, not text",
            col_name(i),
            other.data_type()
        )),
    }
}

fn req<T>(v: Option<T>, i: usize) -> Result<T, String> {
    v.ok_or_else(|| format!("{} is NULL", col_name(i)))
}

fn opt_u32(row: &rusqlite::Row<'_>, i: usize) -> Result<Option<u32>, String> {
    opt_int(row, i)?
        .map(|v| u32::try_from(v).map_err(|_| format!("{} {v} is out of range", col_name(i))))
        .transpose()
}

fn parsed<T: std::str::FromStr>(row: &rusqlite::Row<'_>, i: usize) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let s = req(opt_text(row, i)?, i)?;
    s.parse().map_err(|e| format!("{}: {e}", col_name(i)))
}

fn decode_body(row: &rusqlite::Row<'_>) -> Result<NewRecord, String> {
    let object = match (opt_text(row, 10)?, opt_text(row, 11)?) {
        (None, None) => None,
        (Some(kind), Some(value)) => Some(AuditObject {
            kind: kind.parse().map_err(|e| format!("object_kind: {e}"))?,
            value,
        }),
        _ => return Err("object_kind and object must both be set or both be NULL".into()),
    };
    Ok(NewRecord {
        ts_ns: req(opt_int(row, 1)?, 1)?,
        agent: opt_text(row, 2)?,
        cgroup_id: opt_int(row, 3)?.map(|v| v as u64),
        pid: opt_u32(row, 4)?,
        tgid: opt_u32(row, 5)?,
        uid: opt_u32(row, 6)?,
        comm: opt_text(row, 7)?,
        exe: opt_text(row, 8)?,
        action: req(opt_text(row, 9)?, 9)?,
        object,
        verdict: parsed(row, 12)?,
        risk: parsed(row, 13)?,
        rule_id: opt_text(row, 14)?,
        reason: req(opt_text(row, 15)?, 15)?,
        source: parsed(row, 16)?,
    })
}

/// Reads all checkpoints in id order, leniently (verify judges them).
pub(crate) struct RawCheckpoint {
    pub id: i64,
    pub seq: i64,
    pub hash: Option<Hash>,
    pub ts_ns: Option<i64>,
    pub signature: Option<[u8; 64]>,
}

pub(crate) fn read_checkpoints(
    conn: &Connection,
    path: &Path,
) -> Result<Vec<RawCheckpoint>, AuditError> {
    let err = sql_err(path);
    let mut stmt = conn
        .prepare("SELECT id, seq, hash, ts_ns, signature FROM checkpoints ORDER BY id")
        .map_err(&err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(RawCheckpoint {
                id: r.get(0)?,
                seq: match r.get_ref(1)? {
                    ValueRef::Integer(v) => v,
                    _ => i64::MIN,
                },
                hash: blob32(r.get_ref(2)?),
                ts_ns: match r.get_ref(3)? {
                    ValueRef::Integer(v) => Some(v),
                    _ => None,
                },
                signature: match r.get_ref(4)? {
                    ValueRef::Blob(b) => b.try_into().ok(),
                    _ => None,
                },
            })
        })
        .map_err(&err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&err)
}

impl RawCheckpoint {
    pub fn into_checkpoint(self) -> Option<Checkpoint> {
        Some(Checkpoint {
            id: u64::try_from(self.id).ok()?,
            seq: u64::try_from(self.seq).ok()?,
            hash: self.hash?,
            ts_ns: self.ts_ns?,
            signature: self.signature?,
        })
    }
}
