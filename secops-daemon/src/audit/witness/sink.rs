//! The witnesses an operator configured, and what each has been sent.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::file::FileWitness;
use super::http::{http_request, parse_url};
use super::syslog::SyslogWitness;
use super::WitnessedCheckpoint;

/// Checkpoints kept for a witness that cannot be reached, to send once it can. Beyond this the
/// oldest are dropped (and counted): newer checkpoints cover everything older ones did.
const BACKLOG: usize = 100_000;

/// A witness as configured: `file:PATH` (or an absolute path), `syslog+tcp://HOST:PORT`,
/// `http://HOST:PORT/PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WitnessSpec {
    File(PathBuf),
    SyslogTcp(String),
    Http(String),
}

impl std::str::FromStr for WitnessSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<WitnessSpec, String> {
        if let Some(addr) = s.strip_prefix("syslog+tcp://") {
            if addr
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(format!("{s:?}: expected syslog+tcp://HOST:PORT"));
            }
            return Ok(WitnessSpec::SyslogTcp(
                addr.trim_end_matches('/').to_owned(),
            ));
        }
        if s.starts_with("http://") {
            parse_url(s)?;
            return Ok(WitnessSpec::Http(s.to_owned()));
        }
        let path = s.strip_prefix("file:").unwrap_or(s);
        if !path.starts_with('/') {
            return Err(format!(
                "{s:?}: expected file:/ABSOLUTE/PATH, syslog+tcp://HOST:PORT or http://HOST:PORT/PATH"
            ));
        }
        Ok(WitnessSpec::File(PathBuf::from(path)))
    }
}

impl std::fmt::Display for WitnessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WitnessSpec::File(p) => write!(f, "file:{}", p.display()),
            WitnessSpec::SyslogTcp(a) => write!(f, "syslog+tcp://{a}"),
            WitnessSpec::Http(u) => f.write_str(u),
        }
    }
}

/// How one witness is doing, for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WitnessStatus {
    pub witness: String,
    /// The seq of the newest checkpoint this witness acknowledged (0: none yet).
    pub witnessed_seq: u64,
    pub witnessed_number: u64,
    /// Checkpoints waiting to be sent.
    pub pending: usize,
    /// Checkpoints dropped from a full backlog.
    pub dropped: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

enum Sink {
    File(FileWitness),
    Syslog(SyslogWitness),
    Http(String),
}

struct Target {
    sink: Sink,
    backlog: VecDeque<WitnessedCheckpoint>,
    status: WitnessStatus,
}

/// Every configured witness.
pub struct WitnessSet {
    targets: Vec<Target>,
}

impl WitnessSet {
    pub fn new(specs: &[WitnessSpec]) -> WitnessSet {
        let host = super::hostname();
        WitnessSet {
            targets: specs
                .iter()
                .map(|spec| Target {
                    sink: match spec {
                        WitnessSpec::File(p) => Sink::File(FileWitness::new(p)),
                        WitnessSpec::SyslogTcp(a) => {
                            Sink::Syslog(SyslogWitness::new(a, host.clone()))
                        }
                        WitnessSpec::Http(u) => Sink::Http(u.clone()),
                    },
                    backlog: VecDeque::new(),
                    status: WitnessStatus {
                        witness: spec.to_string(),
                        ..WitnessStatus::default()
                    },
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Queues checkpoints for every witness and sends what each has waiting. A witness that
    /// fails keeps its backlog for the next call.
    pub fn send(&mut self, checkpoints: &[WitnessedCheckpoint]) {
        for t in &mut self.targets {
            t.backlog.extend(checkpoints.iter().cloned());
            while t.backlog.len() > BACKLOG {
                t.backlog.pop_front();
                t.status.dropped += 1;
            }
            if t.backlog.is_empty() {
                continue;
            }
            let batch: Vec<WitnessedCheckpoint> = t.backlog.iter().cloned().collect();
            let result = match &mut t.sink {
                Sink::File(f) => {
                    let lines: String = batch.iter().map(|c| c.json_line()).collect();
                    f.send(&lines)
                }
                Sink::Syslog(s) => s.send(&batch),
                Sink::Http(url) => {
                    let lines: String = batch.iter().map(|c| c.json_line()).collect();
                    match http_request("POST", url, Some(lines.as_bytes()), Duration::from_secs(5))
                    {
                        Ok((s, _)) if (200..300).contains(&s) => Ok(()),
                        Ok((s, _)) => Err(std::io::Error::other(format!("answered HTTP {s}"))),
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(()) => {
                    if let Some(last) = batch.last() {
                        t.status.witnessed_seq = last.seq;
                        t.status.witnessed_number = last.number;
                    }
                    t.backlog.clear();
                    t.status.last_error = None;
                }
                Err(e) => {
                    t.status.failures += 1;
                    if t.status.last_error.is_none() {
                        tracing::warn!(witness = %t.status.witness, "audit witness failing: {e}");
                    }
                    t.status.last_error = Some(e.to_string());
                }
            }
            t.status.pending = t.backlog.len();
        }
    }

    pub fn status(&self) -> Vec<WitnessStatus> {
        self.targets.iter().map(|t| t.status.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "file:/var/log/w".parse::<WitnessSpec>().unwrap(),
            WitnessSpec::File("/var/log/w".into())
        );
        assert_eq!(
            "/var/log/w".parse::<WitnessSpec>().unwrap(),
            WitnessSpec::File("/var/log/w".into())
        );
        assert_eq!(
            "syslog+tcp://127.0.0.1:514".parse::<WitnessSpec>().unwrap(),
            WitnessSpec::SyslogTcp("127.0.0.1:514".into())
        );
        assert!("syslog+tcp://127.0.0.1".parse::<WitnessSpec>().is_err());
        assert!("relative/file".parse::<WitnessSpec>().is_err());
        assert!("http://127.0.0.1:9/w".parse::<WitnessSpec>().is_ok());
    }
}
