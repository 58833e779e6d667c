//! Ring buffer records (`struct secops_event`) as Rust values, and the reader that takes
//! them out of the pinned `secops_events` ring buffer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use aya::maps::{Map, MapData, RingBuf};
use secops_common::kernel::{
    DecisionKey, Event, EventHeader, GrantKey, AF_INET, AF_INET6, EVENT_EXEC, EVENT_EXIT,
    EVENT_GRANT, EVENT_LSM, EVENT_NET, EVENT_RENAME, EVENT_UNLINK, GRANT_ONE_SHOT, MAP_EVENTS,
    NET_CONNECT, NET_DNS_LISTENER, NET_SENDMSG, VERDICT_ALLOW, VERDICT_DENY, VERDICT_ESCALATE,
};
use secops_common::Verdict;
use tokio::io::unix::AsyncFd;

use super::error::{KernelError, Result};
use super::ring_positions::RingPositions;

/// What every event says about who did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMeta {
    pub agent_index: u32,
    /// The agent cgroup's id (the task itself may be in a cgroup below it).
    pub cgroup_id: u64,
    /// CLOCK_BOOTTIME ns.
    pub ts_boot_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    pub uid: u32,
    /// What the kernel did: `Allow` (observed) or `Deny` (blocked).
    pub verdict: Verdict,
    pub comm: String,
    /// Where the programs counted this denial (`secops_decisions`), if they did.
    pub counted: Option<DecisionKey>,
}

/// Which egress hook judged a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetHook {
    /// connect(2): TCP, or a UDP socket being connected.
    Connect,
    /// sendto/sendmsg on an unconnected UDP socket.
    Sendmsg,
}

/// What an LSM denial was about (`enum secops_lsm_op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LsmOp {
    Unlink,
    Rmdir,
    RenameSource,
    /// The file a rename would have replaced (or the new name it would have made).
    RenameTarget,
    Link,
    Truncate,
    OpenWrite,
    OpenRead,
    Exec,
    /// A memfd or a deleted file.
    ExecFileless,
    /// A denied binary mapped executable without exec(2) (`ld.so BINARY`).
    MmapExec,
    /// A raw or packet socket.
    SocketCreate,
    SocketConnect,
    UnixConnect,
    Bpf,
    Ptrace,
    Signal,
    CgroupWrite,
    /// mount(2), a bind mount or remount included.
    Mount,
    Umount,
    MoveMount,
    PivotRoot,
    /// Module autoloading by name.
    ModuleRequest,
    /// A file or buffer read into the kernel: init_module, finit_module, firmware, kexec.
    KernelLoad,
    Chmod,
    Mkdir,
    Symlink,
}

/// `enum secops_lsm_op` both ways: the one list of which code is which check.
const LSM_OPS: [(u32, LsmOp); 27] = {
    use secops_common::kernel::*;
    [
        (LSM_UNLINK, LsmOp::Unlink),
        (LSM_RMDIR, LsmOp::Rmdir),
        (LSM_RENAME_SOURCE, LsmOp::RenameSource),
        (LSM_RENAME_TARGET, LsmOp::RenameTarget),
        (LSM_LINK, LsmOp::Link),
        (LSM_TRUNCATE, LsmOp::Truncate),
        (LSM_OPEN_WRITE, LsmOp::OpenWrite),
        (LSM_OPEN_READ, LsmOp::OpenRead),
        (LSM_EXEC, LsmOp::Exec),
        (LSM_EXEC_FILELESS, LsmOp::ExecFileless),
        (LSM_MMAP_EXEC, LsmOp::MmapExec),
        (LSM_SOCKET_CREATE, LsmOp::SocketCreate),
        (LSM_SOCKET_CONNECT, LsmOp::SocketConnect),
        (LSM_UNIX_CONNECT, LsmOp::UnixConnect),
        (LSM_BPF, LsmOp::Bpf),
        (LSM_PTRACE, LsmOp::Ptrace),
        (LSM_SIGNAL, LsmOp::Signal),
        (LSM_CGROUP_WRITE, LsmOp::CgroupWrite),
        (LSM_MOUNT, LsmOp::Mount),
        (LSM_UMOUNT, LsmOp::Umount),
        (LSM_MOVE_MOUNT, LsmOp::MoveMount),
        (LSM_PIVOT_ROOT, LsmOp::PivotRoot),
        (LSM_MODULE_REQUEST, LsmOp::ModuleRequest),
        (LSM_KERNEL_LOAD, LsmOp::KernelLoad),
        (LSM_CHMOD, LsmOp::Chmod),
        (LSM_MKDIR, LsmOp::Mkdir),
        (LSM_SYMLINK, LsmOp::Symlink),
    ]
};

impl LsmOp {
    pub fn from_code(code: u32) -> Option<LsmOp> {
        LSM_OPS.iter().find(|(c, _)| *c == code).map(|(_, op)| *op)
    }

    /// The op's code in `enum secops_lsm_op`.
    pub fn code(self) -> u32 {
        LSM_OPS
            .iter()
            .find(|(_, op)| *op == self)
            .map_or(0, |(code, _)| *code)
    }

    /// The name audit records use.
    pub fn name(self) -> &'static str {
        match self {
            LsmOp::Unlink => "unlink",
            LsmOp::Rmdir => "rmdir",
            LsmOp::RenameSource => "rename",
            LsmOp::RenameTarget => "rename-over",
            LsmOp::Link => "link",
            LsmOp::Truncate => "truncate",
            LsmOp::OpenWrite => "open-write",
            LsmOp::OpenRead => "open-read",
            LsmOp::Exec => "exec",
            LsmOp::ExecFileless => "exec-fileless",
            LsmOp::MmapExec => "mmap-exec",
            LsmOp::SocketCreate => "socket-create",
            LsmOp::SocketConnect => "connect",
            LsmOp::UnixConnect => "unix-connect",
            LsmOp::Bpf => "bpf",
            LsmOp::Ptrace => "ptrace",
            LsmOp::Signal => "signal",
            LsmOp::CgroupWrite => "cgroup-write",
            LsmOp::Mount => "mount",
            LsmOp::Umount => "umount",
            LsmOp::MoveMount => "move-mount",
            LsmOp::PivotRoot => "pivot-root",
            LsmOp::ModuleRequest => "module-request",
            LsmOp::KernelLoad => "kernel-load",
            LsmOp::Chmod => "chmod",
            LsmOp::Mkdir => "mkdir",
            LsmOp::Symlink => "symlink",
        }
    }
}

/// An LSM program's denial (see `struct secops_lsm_body`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsmDenial {
    pub op: LsmOp,
    /// Rule index + 1 in the compiled file rules; 0: built-in self-protection.
    pub rule: u32,
    pub dev: u32,
    pub ino: u64,
    /// The entry that decided ({0, 0}: none, a fallback).
    pub anchor_dev: u32,
    pub anchor_ino: u64,
    pub depth: u32,
    /// Names from the object up (the object's first).
    pub names: Vec<String>,
    pub target_pid: u32,
    pub signal: u32,
    pub family: u16,
    pub sock_type: u16,
    pub protocol: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// A task of the agent executed a program.
    Exec {
        meta: EventMeta,
        /// As passed to execve (may be relative).
        filename: String,
        /// The head of argv.
        argv: Vec<String>,
        /// The argv was longer than the kernel copies; the last element may be cut short.
        argv_truncated: bool,
    },
    /// The last thread of a process of the agent exited.
    Exit {
        meta: EventMeta,
        /// A wait(2) status.
        status: u32,
    },
    /// unlink, unlinkat or rmdir was called (an attempt: the result is not known).
    Unlink {
        meta: EventMeta,
        /// The directory fd a relative path is relative to (-100: the working directory).
        dfd: i32,
        path: String,
        /// unlinkat flags; AT_REMOVEDIR (0x200) for rmdir.
        flags: u32,
    },
    /// rename, renameat or renameat2 was called (an attempt).
    Rename {
        meta: EventMeta,
        olddfd: i32,
        old_path: String,
        newdfd: i32,
        new_path: String,
        flags: u32,
    },
    /// A destination outside the agent's egress allowlist; the syscall got EPERM.
    Net {
        meta: EventMeta,
        hook: NetHook,
        /// IPPROTO_* of the socket.
        protocol: u16,
        /// IPv4-mapped IPv6 destinations are reported as the IPv4 address.
        addr: IpAddr,
        port: u16,
        /// The destination is one of the daemon's DNS listeners, which an agent reaches only
        /// through the redirect of its port-53 traffic (not its allowlist).
        dns_listener: bool,
    },
    /// A BPF LSM program denied something (the syscall got EPERM).
    Lsm { meta: EventMeta, denial: LsmDenial },
    /// Something the policy denies or escalates passed because a human approved it: a grant
    /// in `secops_grants` was used.
    Granted {
        meta: EventMeta,
        /// The approval ticket behind the grant.
        ticket: u64,
        key: GrantKey,
        one_shot: bool,
        /// For files, the LSM check that passed.
        check: Option<LsmOp>,
    },
}

impl KernelEvent {
    pub fn meta(&self) -> &EventMeta {
        match self {
            KernelEvent::Exec { meta, .. }
            | KernelEvent::Exit { meta, .. }
            | KernelEvent::Unlink { meta, .. }
            | KernelEvent::Rename { meta, .. }
            | KernelEvent::Net { meta, .. }
            | KernelEvent::Lsm { meta, .. }
            | KernelEvent::Granted { meta, .. } => meta,
        }
    }
}

/// A wait(2) status as (exit code, terminating signal).
pub fn split_wait_status(status: u32) -> (Option<i32>, Option<i32>) {
    let signal = (status & 0x7f) as i32;
    if signal == 0 {
        (Some(((status >> 8) & 0xff) as i32), None)
    } else {
        (None, Some(signal))
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn malformed(len: usize, detail: String) -> KernelError {
    KernelError::MalformedEvent { len, detail }
}

/// Parses one ring buffer record.
pub fn parse_event(record: &[u8]) -> Result<KernelEvent> {
    if record.len() < std::mem::size_of::<Event>() {
        return Err(malformed(
            record.len(),
            format!(
                "shorter than struct secops_event ({} bytes)",
                std::mem::size_of::<Event>()
            ),
        ));
    }
    // SAFETY: `Event` is #[repr(C)] plain data (integers, byte arrays, a union of such),
    // valid for any bit pattern, and the record is at least its size.
    let event: Event = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let h: EventHeader = event.header;
    let verdict = match h.verdict {
        VERDICT_ALLOW => Verdict::Allow,
        VERDICT_DENY => Verdict::Deny,
        VERDICT_ESCALATE => Verdict::Escalate,
        other => return Err(malformed(record.len(), format!("unknown verdict {other}"))),
    };
    let meta = EventMeta {
        agent_index: h.agent_index,
        cgroup_id: h.cgroup_id,
        ts_boot_ns: h.ts_boot_ns,
        pid: h.pid,
        tgid: h.tgid,
        uid: h.uid,
        verdict,
        comm: c_string(&h.comm),
        counted: (h.decision_epoch != 0).then_some(DecisionKey {
            cgroup_id: h.cgroup_id,
            epoch: h.decision_epoch,
            slot: h.decision_slot,
            verdict: h.verdict as u8,
            pad: 0,
        }),
    };
    // SAFETY (each union read): every member is plain data valid for any bit pattern; the
    // header's kind only says which one is meaningful.
    Ok(match h.kind {
        EVENT_EXEC => {
            let b = unsafe { event.body.exec };
            let len = (b.argv_len as usize).min(b.argv.len());
            let mut argv: Vec<String> = b.argv[..len]
                .split(|&c| c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            // The last argument's terminating NUL leaves an empty piece behind.
            if b.argv[..len].last() == Some(&0) {
                argv.pop();
            }
            KernelEvent::Exec {
                meta,
                filename: c_string(&b.filename),
                argv,
                argv_truncated: b.args_size > b.argv_len,
            }
        }
        EVENT_EXIT => KernelEvent::Exit {
            meta,
            status: unsafe { event.body.exit }.exit_code,
        },
        EVENT_UNLINK => {
            let b = unsafe { event.body.unlink };
            KernelEvent::Unlink {
                meta,
                dfd: b.dfd,
                path: c_string(&b.path),
                flags: b.flags,
            }
        }
        EVENT_RENAME => {
            let b = unsafe { event.body.rename };
            KernelEvent::Rename {
                meta,
                olddfd: b.olddfd,
                old_path: c_string(&b.oldpath),
                newdfd: b.newdfd,
                new_path: c_string(&b.newpath),
                flags: b.flags,
            }
        }
        EVENT_NET => {
            let b = unsafe { event.body.net };
            let addr = match b.family {
                AF_INET => IpAddr::V4(Ipv4Addr::new(b.addr[0], b.addr[1], b.addr[2], b.addr[3])),
                AF_INET6 => IpAddr::V6(Ipv6Addr::from(b.addr)),
                other => {
                    return Err(malformed(
                        record.len(),
                        format!("unknown address family {other}"),
                    ))
                }
            };
            let hook = match b.kind {
                NET_CONNECT => NetHook::Connect,
                NET_SENDMSG => NetHook::Sendmsg,
                other => return Err(malformed(record.len(), format!("unknown net hook {other}"))),
            };
            KernelEvent::Net {
                meta,
                hook,
                protocol: b.protocol,
                addr,
                port: b.port,
                dns_listener: b.reason == NET_DNS_LISTENER,
            }
        }
        EVENT_LSM => {
            let b = unsafe { event.body.lsm };
            let op = LsmOp::from_code(b.op)
                .ok_or_else(|| malformed(record.len(), format!("unknown LSM op {}", b.op)))?;
            let n = (b.n_names as usize).min(b.names.len());
            KernelEvent::Lsm {
                meta,
                denial: LsmDenial {
                    op,
                    rule: b.rule,
                    dev: b.dev,
                    ino: b.ino,
                    anchor_dev: b.anchor_dev,
                    anchor_ino: b.anchor_ino,
                    depth: b.depth,
                    names: b.names[..n].iter().map(|name| c_string(name)).collect(),
                    target_pid: b.target_pid,
                    signal: b.signal,
                    family: b.family,
                    sock_type: b.sock_type,
                    protocol: b.protocol,
                },
            }
        }
        EVENT_GRANT => {
            let b = unsafe { event.body.grant };
            KernelEvent::Granted {
                meta,
                ticket: b.ticket,
                key: b.key,
                one_shot: b.flags & GRANT_ONE_SHOT != 0,
                check: LsmOp::from_code(b.lsm_op),
            }
        }
        other => {
            return Err(malformed(
                record.len(),
                format!("unknown event kind {other}"),
            ))
        }
    })
}

fn open_ring(pin_dir: &Path) -> Result<RingBuf<MapData>> {
    let conv = |e| KernelError::map(MAP_EVENTS, "opening the pinned ring buffer", e);
    // From the pin, the map's size is the kernel's, not an object file's: a ring buffer
    // adopted from an earlier daemon may have been made with another size.
    let data = MapData::from_pin(pin_dir.join(MAP_EVENTS)).map_err(conv)?;
    let map = Map::from_map_data(data).map_err(conv)?;
    RingBuf::try_from(map).map_err(conv)
}

/// Reads events from the pinned ring buffer, without blocking, or blocking with a timeout.
/// One reader per ring buffer: records are consumed as they are read.
pub struct EventReader {
    ring: RingBuf<MapData>,
    positions: RingPositions,
}

impl EventReader {
    pub fn open(pin_dir: &Path) -> Result<EventReader> {
        let ring = open_ring(pin_dir)?;
        let positions = RingPositions::map(ring.as_raw_fd())?;
        Ok(EventReader { ring, positions })
    }

    /// Bytes of events ever reserved in the ring buffer: every event the programs have begun
    /// lies below this position.
    pub fn produced(&self) -> u64 {
        self.positions.produced()
    }

    /// Bytes of events ever consumed: read by this reader or an earlier daemon's.
    pub fn consumed(&self) -> u64 {
        self.positions.consumed()
    }

    /// The next event already in the buffer, if any.
    pub fn try_next(&mut self) -> Option<Result<KernelEvent>> {
        let item = self.ring.next()?;
        Some(parse_event(&item))
    }

    /// Waits until the buffer has data or `timeout` passes; Ok(true) if there is data.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ret < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(KernelError::MapSyscall {
                map: MAP_EVENTS,
                action: "polling",
                source: e,
            });
        }
        Ok(ret > 0)
    }

    /// Reads events for up to `timeout`, stopping early once `done` says the events so far
    /// are enough.
    pub fn collect_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[KernelEvent]) -> bool,
    ) -> Result<Vec<KernelEvent>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            while let Some(event) = self.try_next() {
                events.push(event?);
            }
            if done(&events) {
                return Ok(events);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(events);
            }
            self.wait(left.min(Duration::from_millis(100)))?;
        }
    }

    /// An async reader on the current tokio runtime (which must have IO enabled).
    pub fn into_async(self) -> Result<AsyncEventReader> {
        let register_err = |source| KernelError::MapSyscall {
            map: MAP_EVENTS,
            action: "registering with the tokio reactor",
            source,
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(register_err(std::io::Error::other(
                "not inside a tokio runtime",
            )));
        }
        // SAFETY: the RingBuf owns its map fd for as long as it lives (and the AsyncFd owns
        // the RingBuf), and its as_raw_fd always returns that same fd.
        let fd =
            unsafe { AsyncFd::register_with_interest(self.ring, tokio::io::Interest::READABLE) }
                .map_err(|e| register_err(e.into()))?;
        Ok(AsyncEventReader { fd })
    }
}

/// The ring buffer read from a tokio task: `next().await` yields each event as it comes.
pub struct AsyncEventReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl AsyncEventReader {
    pub async fn next(&mut self) -> Result<KernelEvent> {
        loop {
            if let Some(item) = self.fd.get_mut().next() {
                return parse_event(&item);
            }
            let mut guard =
                self.fd
                    .readable_mut()
                    .await
                    .map_err(|source| KernelError::MapSyscall {
                        map: MAP_EVENTS,
                        action: "waiting for events",
                        source,
                    })?;
            if let Some(item) = guard.get_inner_mut().next() {
                return parse_event(&item);
            }
            // Empty: the readiness was stale; wait for the next wakeup.
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secops_common::kernel::{EventBody, ExecBody, NetBody, ARGV_LEN, PATH_LEN};

    fn record(event: &Event) -> Vec<u8> {
        let size = std::mem::size_of::<Event>();
        let mut bytes = vec![0u8; size];
        // SAFETY: writes exactly one Event into a buffer of its size.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), *event) };
        bytes
    }

    fn header(kind: u32, verdict: u32) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        EventHeader {
            kind,
            agent_index: 4,
            cgroup_id: 99,
            ts_boot_ns: 5,
            pid: 10,
            tgid: 10,
            uid: 1000,
            verdict,
            comm,
            decision_epoch: 0,
            decision_slot: 0,
            pad: 0,
        }
    }

    #[test]
    fn parses_exec_with_argv_head() {
        let mut exec = ExecBody {
            filename: [0; PATH_LEN],
            argv: [0; ARGV_LEN],
            argv_len: 0,
            args_size: 0,
        };
        exec.filename[..9].copy_from_slice(b"/bin/true");
        let args = b"true\0--version\0";
        exec.argv[..args.len()].copy_from_slice(args);
        exec.argv_len = args.len() as u32;
        exec.args_size = args.len() as u32;
        let event = Event {
            header: header(EVENT_EXEC, VERDICT_ALLOW),
            body: EventBody { exec },
        };
        let parsed = parse_event(&record(&event)).expect("parses");
        assert_eq!(
            parsed,
            KernelEvent::Exec {
                meta: EventMeta {
                    agent_index: 4,
                    cgroup_id: 99,
                    ts_boot_ns: 5,
                    pid: 10,
                    tgid: 10,
                    uid: 1000,
                    verdict: Verdict::Allow,
                    comm: "curl".into(),
                    counted: None,
                },
                filename: "/bin/true".into(),
                argv: vec!["true".into(), "--version".into()],
                argv_truncated: false,
            }
        );
    }

    #[test]
    fn parses_denied_ipv4_connect() {
        let mut net = NetBody {
            family: AF_INET,
            protocol: 6,
            port: 8080,
            kind: NET_CONNECT,
            ..NetBody::default()
        };
        net.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let event = Event {
            header: header(EVENT_NET, VERDICT_DENY),
            body: EventBody { net },
        };
        match parse_event(&record(&event)).expect("parses") {
            KernelEvent::Net {
                meta,
                hook,
                addr,
                port,
                protocol,
                dns_listener,
            } => {
                assert!(!dns_listener);
                assert_eq!(meta.verdict, Verdict::Deny);
                assert_eq!(hook, NetHook::Connect);
                assert_eq!(addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
                assert_eq!((port, protocol), (8080, 6));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_short_records_and_unknown_kinds() {
        assert!(parse_event(&[0u8; 16]).is_err());
        let event = Event {
            header: header(77, VERDICT_ALLOW),
            body: EventBody {
                net: NetBody::default(),
            },
        };
        let err = parse_event(&record(&event)).expect_err("unknown kind");
        assert!(err.to_string().contains("unknown event kind 77"), "{err}");
    }

    #[test]
    fn wait_status_splits() {
        assert_eq!(split_wait_status(3 << 8), (Some(3), None));
        assert_eq!(split_wait_status(9), (None, Some(9)));
    }
}
