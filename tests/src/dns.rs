//! DNS for the host tests and benchmarks: a real upstream resolver (Debian's dnsmasq on
//! loopback, answering only its own records and, if asked, logging every query it receives),
//! and DNS queries built and read by hand, so the clients measured or tested add nothing of
//! their own.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A query for `name` (dotted, no trailing dot), type `qtype`, recursion desired, no EDNS.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// (rcode, answer count) of `reply`, if it is the reply to query `id`.
pub fn reply(id: u16, reply: &[u8]) -> Option<(u8, u16)> {
    (reply.len() >= 12 && reply[..2] == id.to_be_bytes() && reply[2] & 0x80 != 0)
        .then(|| (reply[3] & 0x0f, u16::from_be_bytes([reply[6], reply[7]])))
}

/// Whether dnsmasq can be run here.
pub fn have_dnsmasq() -> bool {
    Command::new("sh")
        .args(["-c", "command -v dnsmasq"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// dnsmasq on 127.0.0.1:port, answering only its own records, logging every query.
pub struct Upstream {
    child: Child,
    pub port: u16,
    log: PathBuf,
    dir: PathBuf,
}

impl Upstream {
    /// Starts dnsmasq with `records` (its own options, e.g. `--host-record=...`); every
    /// answer has TTL `ttl`; `log`: record every query it receives.
    pub fn start(dir: &Path, records: &[String], ttl: u32, log_queries: bool) -> Upstream {
        let port = free_port();
        let log = dir.join("dnsmasq.log");
        let child = Command::new("dnsmasq")
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg(format!("--port={port}"))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args(["--no-resolv", "--no-hosts", "--no-poll", "--user=root"])
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .args(log_queries.then(|| "--log-queries".to_owned()))
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--local-ttl={ttl}"))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq");
        let upstream = Upstream {
            child,
            port,
            log,
            dir: dir.to_path_buf(),
        };
        let started = Instant::now();
        while query_direct(upstream.addr(), "pkg.test", 1).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "dnsmasq did not answer"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        upstream
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Queries the upstream received for `name` (any type), by its own log.
    pub fn queries_for(&self, name: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("query[") && l.contains(&format!(" {name} from")))
            .count()
    }

    /// Queries of type `qtype` the upstream received for `name`.
    pub fn queries_of(&self, qtype: &str, name: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(&format!("query[{qtype}] {name} from")))
            .count()
    }

    /// Waits until the log shows a query for `name` (so every earlier line is written too).
    pub fn wait_for_query(&self, name: &str) {
        let started = Instant::now();
        while self.queries_for(name) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the upstream never logged {name}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free for UDP and TCP on 127.0.0.1 (now).
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One query straight to `server` from this process: (rcode, answers).
pub fn query_direct(server: SocketAddr, name: &str, qtype: u16) -> Option<(u8, u16)> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    socket.send_to(&query(0x1234, name, qtype), server).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    reply(0x1234, &buf[..n])
}

/// An upstream at a distance: a relay on loopback that holds every query for `delay` before
/// passing it to `upstream` and relays the answer back, one query at a time (the benchmarks
/// ask one at a time). Loopback dnsmasq answers in ~12 µs, the fastest upstream there is; a
/// resolver on the LAN or in a cloud region is 0.2-1 ms away. (A netem qdisc on a veth into a
/// namespace was the first choice; this host's kernel has no sch_netem.) Stops on drop.
pub struct Delayed {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delayed {
    pub fn start(upstream: SocketAddr, delay: Duration) -> Delayed {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        let addr = front.local_addr().expect("addr");
        front
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind the relay's upstream side");
        back.connect(upstream).expect("connect");
        back.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, client)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let until = Instant::now() + delay;
                let query = buf[..n].to_vec();
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                if back.send(&query).is_err() {
                    continue;
                }
                if let Ok(n) = back.recv(&mut buf) {
                    let _ = front.send_to(&buf[..n], client);
                }
            }
        });
        Delayed {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Delayed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
