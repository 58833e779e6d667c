//! The kernel audit subsystem over NETLINK_AUDIT: its status (`audit_enabled`), turning it
//! on or back off, and the read-only multicast group (`AUDIT_NLGRP_READLOG`), which receives
//! every record the kernel emits without becoming the audit daemon (auditd, if one runs,
//! keeps its unicast connection; CAP_AUDIT_READ is enough to listen).

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const AUDIT_STATUS_ENABLED: u32 = 1;
/// `AUDIT_NLGRP_READLOG` is group 1: bit 0 of the bind mask.
const READLOG_GROUPS: u32 = 1;
const HEADER: usize = 16;
/// `struct audit_status` as of 5.x: eleven `u32`s (older kernels read a prefix).
const STATUS_WORDS: usize = 11;

/// Why talking to the kernel's audit subsystem failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditNetlinkError {
    #[error("NETLINK_AUDIT socket: {0}")]
    Socket(io::Error),
    #[error("joining the audit read-only multicast group (needs CAP_AUDIT_READ, initial network namespace): {0}")]
    Join(io::Error),
    #[error("asking the kernel for the audit status: {0}")]
    Status(io::Error),
    #[error("setting audit_enabled={value} (needs CAP_AUDIT_CONTROL; 2 means locked until reboot): {source}")]
    Set { value: u32, source: io::Error },
    #[error("the kernel's audit answer was malformed: {0}")]
    Malformed(&'static str),
}

/// What `AUDIT_GET` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditStatus {
    /// 0 off, 1 on, 2 on and locked.
    pub enabled: u32,
    /// The pid of the audit daemon (0: none).
    pub auditd_pid: u32,
    /// Records the kernel lost (backlog full, rate limit).
    pub lost: u32,
    pub backlog_limit: u32,
}

/// One record as the kernel sent it: its type (`AUDIT_LANDLOCK_ACCESS` = 1423, ...) and
/// text (`audit(<secs>.<ms>:<serial>): key=value ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub kind: u16,
    pub text: String,
}

fn audit_socket() -> Result<OwnedFd, AuditNetlinkError> {
    rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::AUDIT),
    )
    .map_err(|e| AuditNetlinkError::Socket(e.into()))
}

/// Sends one request and waits for its answer (`want`), or the kernel's error or ack.
fn request(kind: u16, payload: &[u8], want: Option<u16>) -> io::Result<Vec<u8>> {
    let fd = audit_socket().map_err(|e| io::Error::other(e.to_string()))?;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(2)),
    )?;
    let len = (HEADER + payload.len()) as u32;
    let mut message = Vec::with_capacity(len as usize);
    message.extend_from_slice(&len.to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(payload);
    rustix::net::send(&fd, &message, SendFlags::empty())?;
    let mut buf = vec![0u8; 8192];
    loop {
        let (_, n) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?;
        for (kind, body) in messages(&buf[..n.min(buf.len())]) {
            if kind == NLMSG_ERROR {
                let errno = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                if want.is_none() {
                    return Ok(Vec::new());
                }
            } else if Some(kind) == want {
                return Ok(body.to_vec());
            }
        }
    }
}

/// The netlink messages in one datagram: (type, payload).
fn messages(mut datagram: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while datagram.len() >= HEADER {
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if len < HEADER || len > datagram.len() {
            // A multicast record's length counts only its text; take what is there.
            out.push((kind, &datagram[HEADER..]));
            break;
        }
        out.push((kind, &datagram[HEADER..len]));
        let aligned = (len + 3) & !3;
        datagram = datagram.get(aligned..).unwrap_or(&[]);
    }
    out
}

/// The audit subsystem's status.
pub fn status() -> Result<AuditStatus, AuditNetlinkError> {
    let body = request(AUDIT_GET, &[], Some(AUDIT_GET)).map_err(AuditNetlinkError::Status)?;
    let word = |i: usize| {
        body.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let field = |i| word(i).ok_or(AuditNetlinkError::Malformed("short audit_status"));
    Ok(AuditStatus {
        enabled: field(1)?,
        auditd_pid: field(3)?,
        backlog_limit: field(5)?,
        lost: field(6)?,
    })
}

/// Sets `audit_enabled` (0 or 1) host-wide.
pub fn set_enabled(value: u32) -> Result<(), AuditNetlinkError> {
    let mut words = [0u32; STATUS_WORDS];
    words[0] = AUDIT_STATUS_ENABLED;
    words[1] = value;
    let payload: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    request(AUDIT_SET, &payload, None)
        .map(|_| ())
        .map_err(|source| AuditNetlinkError::Set { value, source })
}

/// A listener in the read-only multicast group.
pub struct AuditListener {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl AuditListener {
    /// Joins the group; `recv` waits at most `wait` for a datagram.
    pub fn join(wait: Duration) -> Result<AuditListener, AuditNetlinkError> {
        let fd = audit_socket()?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, READLOG_GROUPS))
            .map_err(|e| AuditNetlinkError::Join(e.into()))?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(wait),
        )
        .map_err(|e| AuditNetlinkError::Join(e.into()))?;
        // A burst of denials should wait in the socket, not be dropped by it.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 4 << 20);
        Ok(AuditListener {
            fd,
            buf: vec![0u8; 16 << 10],
        })
    }

    /// The records of the next datagram; empty when `wait` passed without one.
    pub fn recv(&mut self) -> io::Result<Vec<RawRecord>> {
        match rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::empty()) {
            Ok((_, n)) => Ok(messages(&self.buf[..n.min(self.buf.len())])
                .into_iter()
                .map(|(kind, body)| RawRecord {
                    kind,
                    text: String::from_utf8_lossy(body)
                        .trim_end_matches(['\0', '\n'])
                        .to_owned(),
                })
                .collect()),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_splits_into_its_messages() {
        let mut d = Vec::new();
        for (kind, text) in [(1423u16, "abc"), (1320, "")] {
            let len = (HEADER + text.len()) as u32;
            d.extend_from_slice(&len.to_ne_bytes());
            d.extend_from_slice(&kind.to_ne_bytes());
            d.extend_from_slice(&[0; 10]);
            d.extend_from_slice(text.as_bytes());
            while d.len() % 4 != 0 {
                d.push(0);
            }
        }
        let got = messages(&d);
        assert_eq!(got, vec![(1423, &b"abc"[..]), (1320, &b""[..])]);
    }
}
