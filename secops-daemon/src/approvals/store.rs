//! Tickets in SQLite (`<state>/approvals.db`). Unlike the audit log this table is mutable:
//! it is the queue's current state. Every change to it is also an audit record, written by
//! the caller, so the log stays the history.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use secops_common::RiskLevel;

use crate::audit::Source;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TicketStatus {
    Open,
    Approved,
    Denied,
}

secops_common::named_enum!(TicketStatus, "ticket status", Open => "open", Approved => "approved", Denied => "denied");

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: u64,
    pub agent: String,
    pub action: String,
    /// The object as the audit log shows it; empty when the action had none.
    pub object: String,
    pub risk: RiskLevel,
    pub rule_id: Option<String>,
    /// Why the engine escalated.
    pub reason: String,
    /// The door the escalation came through.
    pub source: Source,
    pub status: TicketStatus,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    /// How many times the agent tried this while the ticket was open.
    pub count: u64,
    pub decided_by: Option<String>,
    pub decided_at_ns: Option<i64>,
    pub decision_reason: Option<String>,
    /// Until when an approval lets the same action through (boot-independent wall clock, ns).
    pub grant_until_ns: Option<i64>,
    /// The approval lets the action through once, then it is spent.
    #[serde(default)]
    pub grant_once: bool,
    /// The file the escalation was about, as the kernel or the daemon resolved it
    /// (kernel device encoding, inode): what a kernel grant for a file names.
    #[serde(default)]
    pub object_inode: Option<(u32, u64)>,
    /// The command line of the process that escalated, as `/proc` showed it when the ticket
    /// was opened (arguments joined by spaces, cut at [`MAX_COMMAND_CHARS`]); `None` when the
    /// process had gone or the door had none.
    #[serde(default)]
    pub command: Option<String>,
}

/// The longest command line a ticket keeps.
pub const MAX_COMMAND_CHARS: usize = 512;

/// What an escalation says about itself.
#[derive(Clone, Debug)]
pub struct NewTicket<'a> {
    pub agent: &'a str,
    pub action: &'a str,
    pub object: &'a str,
    pub risk: RiskLevel,
    pub rule_id: Option<&'a str>,
    pub reason: &'a str,
    pub source: Source,
    pub now_ns: i64,
    /// The file object as resolved when it was escalated (see [`Ticket::object_inode`]); a
    /// repeat updates it, so an approval names the file the agent last tried.
    pub object_inode: Option<(u32, u64)>,
    /// The escalating process's command line (see [`Ticket::command`]).
    pub command: Option<&'a str>,
}

/// A human's decision.
#[derive(Clone, Debug)]
pub enum Decided {
    /// `once`: the grant is spent by its first use.
    Approve {
        grant: Duration,
        once: bool,
    },
    Deny,
}

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error("approval queue {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("approval queue {path}: row {id} is corrupt: {why}")]
    Corrupt { path: PathBuf, id: i64, why: String },
    #[error("no ticket #{0}")]
    NotFound(u64),
    #[error("ticket #{id} is already {status}; only open tickets can be decided")]
    NotOpen { id: u64, status: TicketStatus },
}

pub struct TicketStore {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    risk TEXT NOT NULL,
    rule_id TEXT,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'approved', 'denied')),
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    count INTEGER NOT NULL,
    decided_by TEXT,
    decided_at_ns INTEGER,
    decision_reason TEXT,
    grant_until_ns INTEGER,
    grant_once INTEGER NOT NULL DEFAULT 0,
    object_dev INTEGER,
    object_ino INTEGER,
    command TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_ticket
    ON tickets (agent, action, object) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS grants
    ON tickets (agent, action, object, grant_until_ns) WHERE status = 'approved';
";

const COLUMNS: &str = "id, agent, action, object, risk, rule_id, reason, source, status, \
    first_seen_ns, last_seen_ns, count, decided_by, decided_at_ns, decision_reason, grant_until_ns, \
    grant_once, object_dev, object_ino, command";

/// Columns added after the first release, for queues made by an older daemon.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("grant_once", "INTEGER NOT NULL DEFAULT 0"),
    ("object_dev", "INTEGER"),
    ("object_ino", "INTEGER"),
    ("command", "TEXT"),
];

impl TicketStore {
    pub fn open(path: &Path) -> Result<TicketStore, TicketError> {
        let db = |source| TicketError::Db {
            path: path.to_path_buf(),
            source,
        };
        // Never through a symlink: one planted in the state directory would make the queue
        // live wherever it points.
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let existing: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('tickets')")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<_, _>>()
            })
            .map_err(db)?;
        for (column, ty) in ADDED_COLUMNS {
            if !existing.iter().any(|c| c == column) {
                conn.execute_batch(&format!("ALTER TABLE tickets ADD COLUMN {column} {ty}"))
                    .map_err(db)?;
            }
        }
        Ok(TicketStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn db(&self, source: rusqlite::Error) -> TicketError {
        TicketError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Opens a ticket for this escalation, or counts it on the open one for the same agent,
    /// action type and object. Returns the ticket's id and whether it was already open.
    pub fn escalated(&mut self, t: &NewTicket<'_>) -> Result<(u64, bool), TicketError> {
        let tx = self.conn.transaction().map_err(|e| TicketError::Db {
            path: self.path.clone(),
            source: e,
        })?;
        let joined: Option<i64> = tx
            .query_row(
                "UPDATE tickets SET count = count + 1, last_seen_ns = max(last_seen_ns, ?4),
                     object_dev = coalesce(?5, object_dev), object_ino = coalesce(?6, object_ino)
                 WHERE status = 'open' AND agent = ?1 AND action = ?2 AND object = ?3
                 RETURNING id",
                params![
                    t.agent,
                    t.action,
                    t.object,
                    t.now_ns,
                    t.object_inode.map(|(dev, _)| dev),
                    t.object_inode.map(|(_, ino)| ino as i64)
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| TicketError::Db {
                path: self.path.clone(),
                source: e,
            })?;
        let result = match joined {
            Some(id) => (id as u64, true),
            None => {
                tx.execute(
                    "INSERT INTO tickets (agent, action, object, risk, rule_id, reason, source,
                         status, first_seen_ns, last_seen_ns, count, object_dev, object_ino,
                         command)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?8, 1, ?9, ?10, ?11)",
                    params![
                        t.agent,
                        t.action,
                        t.object,
                        t.risk.to_string(),
                        t.rule_id,
                        t.reason,
                        t.source.as_str(),
                        t.now_ns,
                        t.object_inode.map(|(dev, _)| dev),
                        t.object_inode.map(|(_, ino)| ino as i64),
                        t.command
                    ],
                )
                .map_err(|e| TicketError::Db {
                    path: self.path.clone(),
                    source: e,
                })?;
                (tx.last_insert_rowid() as u64, false)
            }
        };
        tx.commit().map_err(|e| self.db(e))?;
        Ok(result)
    }

    /// The approved ticket whose grant covers this action now, if any.
    pub fn grant(
        &self,
        agent: &str,
        action: &str,
        object: &str,
        now_ns: i64,
    ) -> Result<Option<Ticket>, TicketError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tickets WHERE status = 'approved' AND agent = ?1
             AND action = ?2 AND object = ?3 AND grant_until_ns > ?4
             ORDER BY grant_until_ns DESC LIMIT 1"
        );
        self.conn
            .query_row(&sql, params![agent, action, object, now_ns], |r| {
                Ok(self.ticket(r))
            })
            .optional()
            .map_err(|e| self.db(e))?
            .transpose()
    }

    /// The approved ticket that lets this action through now, if any: [`grant`](Self::grant),
    /// with a one-shot approval spent by this use (of two concurrent uses only one gets it).
    pub fn use_grant(
        &mut self,
        agent: &str,
        action: &str,
        object: &str,
        now_ns: i64,
    ) -> Result<Option<Ticket>, TicketError> {
        match self.grant(agent, action, object, now_ns)? {
            Some(t) if !t.grant_once || self.spend_once(t.id, now_ns)? => Ok(Some(t)),
            _ => Ok(None),
        }
    }

    /// Ends a one-shot approval at its first use (`now_ns`). Returns whether this call spent
    /// it: of two concurrent uses only one does.
    fn spend_once(&mut self, id: u64, now_ns: i64) -> Result<bool, TicketError> {
        let changed = self
            .conn
            .execute(
                "UPDATE tickets SET grant_until_ns = ?2
                 WHERE id = ?1 AND status = 'approved' AND grant_once = 1 AND grant_until_ns > ?2",
                params![id as i64, now_ns],
            )
            .map_err(|e| self.db(e))?;
        Ok(changed == 1)
    }

    pub fn get(&self, id: u64) -> Result<Ticket, TicketError> {
        let sql = format!("SELECT {COLUMNS} FROM tickets WHERE id = ?1");
        self.conn
            .query_row(&sql, params![id as i64], |r| Ok(self.ticket(r)))
            .optional()
            .map_err(|e| self.db(e))?
            .ok_or(TicketError::NotFound(id))?
    }

    /// Tickets, newest first; only those with `status` when given.
    pub fn list(
        &self,
        status: Option<TicketStatus>,
        limit: usize,
    ) -> Result<Vec<Ticket>, TicketError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tickets WHERE ?1 IS NULL OR status = ?1
             ORDER BY id DESC LIMIT ?2"
        );
        self.tickets(&sql, params![status.map(|s| s.as_str()), limit as i64])
    }

    /// Open tickets at `risk` opened at or before `opened_by_ns`, oldest first: the ones a
    /// timeout has run out for. Repeats do not restart the clock: the human was asked when
    /// the ticket opened.
    pub fn expired(
        &self,
        risk: RiskLevel,
        opened_by_ns: i64,
        limit: usize,
    ) -> Result<Vec<Ticket>, TicketError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tickets WHERE status = 'open' AND risk = ?1
             AND first_seen_ns <= ?2 ORDER BY first_seen_ns, id LIMIT ?3"
        );
        self.tickets(&sql, params![risk.to_string(), opened_by_ns, limit as i64])
    }

    fn tickets(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Ticket>, TicketError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map(params, |r| Ok(self.ticket(r)))
            .map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| self.db(e))??);
        }
        Ok(out)
    }

    pub fn open_count(&self) -> Result<u64, TicketError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM tickets WHERE status = 'open'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.db(e))
    }

    /// How many tickets the queue holds in each status (statuses without any are left out).
    pub fn count_by_status(&self) -> Result<Vec<(TicketStatus, u64)>, TicketError> {
        let mut stmt = self
            .conn
            .prepare("SELECT status, count(*) FROM tickets GROUP BY status")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.db(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (status, n) = row.map_err(|e| self.db(e))?;
            let status = status.parse().map_err(|e| TicketError::Corrupt {
                path: self.path.clone(),
                id: 0,
                why: format!("status: {e}"),
            })?;
            out.push((status, n as u64));
        }
        Ok(out)
    }

    /// Records a human's decision on an open ticket.
    pub fn decide(
        &mut self,
        id: u64,
        decision: &Decided,
        by: &str,
        reason: Option<&str>,
        now_ns: i64,
    ) -> Result<Ticket, TicketError> {
        let (status, until, once) = match decision {
            Decided::Approve { grant, once } => (
                TicketStatus::Approved,
                Some(now_ns.saturating_add(i64::try_from(grant.as_nanos()).unwrap_or(i64::MAX))),
                *once,
            ),
            Decided::Deny => (TicketStatus::Denied, None, false),
        };
        let changed = self
            .conn
            .execute(
                "UPDATE tickets SET status = ?2, decided_by = ?3, decided_at_ns = ?4,
                     decision_reason = ?5, grant_until_ns = ?6, grant_once = ?7
                 WHERE id = ?1 AND status = 'open'",
                params![id as i64, status.as_str(), by, now_ns, reason, until, once],
            )
            .map_err(|e| self.db(e))?;
        let ticket = self.get(id)?;
        if changed == 0 {
            return Err(TicketError::NotOpen {
                id,
                status: ticket.status,
            });
        }
        Ok(ticket)
    }

    fn ticket(&self, r: &Row<'_>) -> Result<Ticket, TicketError> {
        let id: i64 = r.get(0).map_err(|e| self.db(e))?;
        let corrupt = |why: String| TicketError::Corrupt {
            path: self.path.clone(),
            id,
            why,
        };
        let get_text = |i: usize| r.get::<_, String>(i).map_err(|e| self.db(e));
        let risk: RiskLevel = get_text(4)?
            .parse()
            .map_err(|e| corrupt(format!("risk: {e}")))?;
        let status: TicketStatus = get_text(8)?
            .parse()
            .map_err(|e| corrupt(format!("status: {e}")))?;
        let count: i64 = r.get(11).map_err(|e| self.db(e))?;
        let object_dev: Option<i64> = r.get(17).map_err(|e| self.db(e))?;
        let object_ino: Option<i64> = r.get(18).map_err(|e| self.db(e))?;
        let object_inode = match (object_dev, object_ino) {
            (Some(dev), Some(ino)) => Some((
                u32::try_from(dev).map_err(|_| corrupt("object_dev".to_owned()))?,
                ino as u64,
            )),
            (None, None) => None,
            _ => return Err(corrupt("object_dev/object_ino: only one is set".to_owned())),
        };
        Ok(Ticket {
            id: id as u64,
            agent: get_text(1)?,
            action: get_text(2)?,
            object: get_text(3)?,
            risk,
            rule_id: r.get(5).map_err(|e| self.db(e))?,
            reason: get_text(6)?,
            source: get_text(7)?
                .parse()
                .map_err(|e| corrupt(format!("source: {e}")))?,
            status,
            first_seen_ns: r.get(9).map_err(|e| self.db(e))?,
            last_seen_ns: r.get(10).map_err(|e| self.db(e))?,
            count: u64::try_from(count).map_err(|_| corrupt("count".to_owned()))?,
            decided_by: r.get(12).map_err(|e| self.db(e))?,
            decided_at_ns: r.get(13).map_err(|e| self.db(e))?,
            decision_reason: r.get(14).map_err(|e| self.db(e))?,
            grant_until_ns: r.get(15).map_err(|e| self.db(e))?,
            grant_once: r.get(16).map_err(|e| self.db(e))?,
            object_inode,
            command: r.get(19).map_err(|e| self.db(e))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escalation<'a>(agent: &'a str, object: &'a str, now_ns: i64) -> NewTicket<'a> {
        NewTicket {
            agent,
            action: "net:connect",
            object,
            risk: RiskLevel::High,
            rule_id: Some("ask"),
            reason: "ask first",
            source: Source::Api,
            now_ns,
            object_inode: None,
            command: Some("git push --force"),
        }
    }

    fn store() -> (tempfile::TempDir, TicketStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TicketStore::open(&dir.path().join("approvals.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn repeats_join_the_open_ticket_and_a_decision_closes_it() {
        let (_dir, mut s) = store();
        let (a, joined) = s.escalated(&escalation("web", "1.2.3.4:443", 10)).unwrap();
        assert!(!joined);
        assert_eq!(
            s.escalated(&escalation("web", "1.2.3.4:443", 20)).unwrap(),
            (a, true)
        );
        let (b, _) = s.escalated(&escalation("web", "1.2.3.4:80", 30)).unwrap();
        let (c, _) = s.escalated(&escalation("db", "1.2.3.4:443", 30)).unwrap();
        assert!(
            a != b && a != c && b != c,
            "object and agent each make their own ticket"
        );
        let t = s.get(a).unwrap();
        assert_eq!((t.count, t.first_seen_ns, t.last_seen_ns), (2, 10, 20));
        assert_eq!(s.open_count().unwrap(), 3);
        assert_eq!(s.count_by_status().unwrap(), [(TicketStatus::Open, 3)]);

        let grant = Decided::Approve {
            grant: Duration::from_nanos(100),
            once: false,
        };
        let t = s.decide(a, &grant, "uid 0", Some("ok"), 50).unwrap();
        assert_eq!(
            (t.status, t.grant_until_ns),
            (TicketStatus::Approved, Some(150))
        );
        assert!(matches!(
            s.decide(a, &Decided::Deny, "uid 0", None, 60),
            Err(TicketError::NotOpen {
                status: TicketStatus::Approved,
                ..
            })
        ));
        assert!(matches!(
            s.decide(999, &Decided::Deny, "x", None, 1),
            Err(TicketError::NotFound(999))
        ));

        // The grant covers exactly that agent, action and object, until it runs out.
        assert_eq!(
            s.grant("web", "net:connect", "1.2.3.4:443", 149)
                .unwrap()
                .map(|t| t.id),
            Some(a)
        );
        assert!(s
            .grant("web", "net:connect", "1.2.3.4:443", 150)
            .unwrap()
            .is_none());
        assert!(s
            .grant("db", "net:connect", "1.2.3.4:443", 100)
            .unwrap()
            .is_none());
        assert!(s
            .grant("web", "net:connect", "1.2.3.4:80", 100)
            .unwrap()
            .is_none());
        // After a decision, the same escalation opens a new ticket.
        let (d, joined) = s.escalated(&escalation("web", "1.2.3.4:443", 200)).unwrap();
        assert!(d > c && !joined);
        let open: Vec<u64> = s
            .list(Some(TicketStatus::Open), 10)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(open, [d, c, b]);
    }

    #[test]
    fn a_one_shot_approval_is_spent_once_and_repeats_track_the_latest_inode() {
        let (_dir, mut s) = store();
        let mut first = escalation("web", "/srv/x", 10);
        first.object_inode = Some((8, 100));
        let (id, _) = s.escalated(&first).unwrap();
        let mut again = escalation("web", "/srv/x", 20);
        again.object_inode = Some((8, 101));
        s.escalated(&again).unwrap();
        assert_eq!(s.get(id).unwrap().object_inode, Some((8, 101)));
        let once = Decided::Approve {
            grant: Duration::from_secs(60),
            once: true,
        };
        let t = s.decide(id, &once, "uid 0", None, 30).unwrap();
        assert!(t.grant_once);
        assert!(s
            .grant("web", "net:connect", "/srv/x", 31)
            .unwrap()
            .is_some());
        assert!(s.spend_once(id, 31).unwrap());
        assert!(!s.spend_once(id, 32).unwrap(), "spent already");
        assert!(s
            .use_grant("web", "net:connect", "/srv/x", 33)
            .unwrap()
            .is_none());
        assert!(s
            .grant("web", "net:connect", "/srv/x", 32)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_queue_from_an_older_daemon_gains_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE tickets (id INTEGER PRIMARY KEY AUTOINCREMENT, agent TEXT NOT NULL,
                action TEXT NOT NULL, object TEXT NOT NULL, risk TEXT NOT NULL, rule_id TEXT,
                reason TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
                first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL,
                count INTEGER NOT NULL, decided_by TEXT, decided_at_ns INTEGER,
                decision_reason TEXT, grant_until_ns INTEGER);
             INSERT INTO tickets (agent, action, object, risk, reason, source, status,
                first_seen_ns, last_seen_ns, count)
             VALUES ('web', 'fs:delete', '/x', 'high', 'ask', 'api', 'open', 1, 1, 1);",
        )
        .unwrap();
        drop(conn);
        let s = TicketStore::open(&path).unwrap();
        let t = s.get(1).unwrap();
        assert_eq!((t.grant_once, t.object_inode), (false, None));
    }

    #[test]
    fn expired_finds_open_tickets_of_one_risk_opened_long_enough_ago() {
        let (_dir, mut s) = store();
        let at = |object: &'static str, risk: RiskLevel, now_ns: i64| NewTicket {
            risk,
            ..escalation("web", object, now_ns)
        };
        let (old_high, _) = s.escalated(&at("a", RiskLevel::High, 100)).unwrap();
        let (older_high, _) = s.escalated(&at("b", RiskLevel::High, 50)).unwrap();
        let (new_high, _) = s.escalated(&at("c", RiskLevel::High, 300)).unwrap();
        let (old_low, _) = s.escalated(&at("d", RiskLevel::Low, 10)).unwrap();
        let (decided, _) = s.escalated(&at("e", RiskLevel::High, 10)).unwrap();
        s.decide(decided, &Decided::Deny, "uid 0", None, 20)
            .unwrap();
        // A repeat late in the ticket's life does not make it younger.
        s.escalated(&at("a", RiskLevel::High, 250)).unwrap();

        let ids = |risk, by, limit| -> Vec<u64> {
            s.expired(risk, by, limit)
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect()
        };
        assert_eq!(ids(RiskLevel::High, 200, 10), [older_high, old_high]);
        assert_eq!(
            ids(RiskLevel::High, 100, 10),
            [older_high, old_high],
            "at the boundary"
        );
        assert_eq!(ids(RiskLevel::High, 99, 10), [older_high]);
        assert_eq!(
            ids(RiskLevel::High, 300, 1),
            [older_high],
            "oldest first, limited"
        );
        assert_eq!(
            ids(RiskLevel::High, 1000, 10),
            [older_high, old_high, new_high]
        );
        assert_eq!(ids(RiskLevel::Low, 200, 10), [old_low]);
        assert!(ids(RiskLevel::Critical, 1000, 10).is_empty());
    }

    #[test]
    fn a_corrupt_row_is_an_error_not_a_guess() {
        let (dir, mut s) = store();
        let (id, _) = s.escalated(&escalation("web", "x", 1)).unwrap();
        let conn = Connection::open(dir.path().join("approvals.db")).unwrap();
        conn.execute("UPDATE tickets SET risk = 'meh' WHERE id = ?1", [id as i64])
            .unwrap();
        assert!(matches!(s.get(id), Err(TicketError::Corrupt { .. })));
    }

    #[test]
    fn a_symlinked_queue_is_refused_and_nothing_is_created_at_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.db");
        let link = dir.path().join("approvals.db");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(TicketStore::open(&link).is_err());
        assert!(!target.exists());
    }
}
