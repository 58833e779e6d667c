//! The syslog witness: each checkpoint as an RFC 5424 message over TCP with octet-counting
//! framing (RFC 6587), which rsyslog's `imtcp`, syslog-ng and SIEM collectors accept. The
//! message is the checkpoint's JSON line; the structured data names it too, for collectors
//! that index SD fields.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::WitnessedCheckpoint;

/// facility 13 (log audit), severity 6 (informational).
const PRI: u32 = 13 * 8 + 6;

pub struct SyslogWitness {
    addr: String,
    stream: Option<TcpStream>,
    hostname: String,
}

impl SyslogWitness {
    pub fn new(addr: &str, hostname: Option<String>) -> SyslogWitness {
        SyslogWitness {
            addr: addr.to_owned(),
            stream: None,
            hostname: hostname.unwrap_or_else(|| "-".into()),
        }
    }

    pub fn send(&mut self, checkpoints: &[WitnessedCheckpoint]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for cp in checkpoints {
            let msg = message(cp, &self.hostname);
            bytes.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            bytes.extend_from_slice(msg.as_bytes());
        }
        if self.stream.is_none() {
            let addr = self
                .addr
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let result = match self.stream.as_mut() {
            Some(s) => s.write_all(&bytes).and_then(|()| s.flush()),
            None => Ok(()),
        };
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`.
fn message(cp: &WitnessedCheckpoint, hostname: &str) -> String {
    // RFC 5424's TIME-SECFRAC has at most six digits: rsyslog mangles nanoseconds into the
    // timestamp it writes (seen: `54.{30Z`).
    let micros = u64::try_from(cp.ts_ns / 1_000).unwrap_or(0);
    let ts = humantime::format_rfc3339_micros(
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros),
    );
    format!(
        "<{PRI}>1 {ts} {hostname} secops {} checkpoint [secops-checkpoint@32473 log=\"{}\" number=\"{}\" seq=\"{}\" key=\"{}\"] {}",
        std::process::id(),
        cp.log_id,
        cp.number,
        cp.seq,
        cp.key_id,
        cp.json_line().trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_rfc5424() {
        let cp = WitnessedCheckpoint {
            secops_checkpoint: 1,
            log_id: "ab".repeat(16),
            number: 3,
            seq: 9,
            hash: "00".repeat(32),
            ts_ns: 1_700_000_000_000_000_000,
            key_id: "cd".repeat(8),
            public_key: "11".repeat(32),
            signature: "22".repeat(64),
            host: None,
        };
        let m = message(&cp, "h1");
        assert!(m.starts_with("<110>1 2023-11-14T22:13:20.000000Z "), "{m}");
        assert!(m.contains(" h1 secops "), "{m}");
        assert!(m.ends_with('}'), "{m}");
    }
}
