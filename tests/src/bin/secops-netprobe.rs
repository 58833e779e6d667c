//! A test helper that does network and file operations and prints one line per operation,
//! `<op> <target> ok` or `<op> <target> errno <NAME>`, so tests can see what the kernel let
//! an agent do. Operations run in order:
//!
//!   tcp ADDR:PORT        connect(2) over TCP (IPv4 or IPv6 by the address)
//!   tcp-mapped V4:PORT   connect(2) on an AF_INET6 socket to ::ffff:V4
//!   udp ADDR:PORT        sendto(2) on an unconnected UDP socket
//!   unlink PATH          unlink(2)
//!   unlinks N PREFIX     unlink(2) of PREFIX0 .. PREFIX{N-1} as fast as possible (a burst of
//!                        events; the files need not exist), then `unlinks N done MICROS`
//!   flood ADDR:PORT PATH connect(2) over TCP again and again (64 at a time, 5 ms apart)
//!                        until PATH exists, then
//!                        `flood ADDR refused N other M` (N: EPERM, M: any other outcome)
//!   detach               fork, setsid, fork: the rest runs in a grandchild (double fork)
//!   sleep MS             wait
//!   lookup NAME:PORT     getaddrinfo(NAME) (the system's resolver library and resolv.conf),
//!                        then connect(2) over TCP to its first address on PORT:
//!                        `lookup NAME addrs A,B connect ok|errno E` or `lookup NAME error ...`
//!   hold ADDR:PORT MS    connect(2) over TCP, wait MS, then send a byte and read one back
//!                        (the connection outlives what allowed it): `hold ADDR ok|errno E`
//!   dnsq NAME TYPE SERVER udp|udp-connected|tcp
//!                        one DNS query, built here, to SERVER (ADDR:PORT): `dnsq NAME TYPE
//!                        rcode N answers M` or `dnsq NAME TYPE errno E` (TYPE: a number)

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn report(op: &str, target: &str, result: std::io::Result<()>) {
    let line = match result {
        Ok(()) => format!("{op} {target} ok"),
        Err(e) => match e.raw_os_error() {
            Some(libc::EPERM) => format!("{op} {target} errno EPERM"),
            Some(libc::ECONNREFUSED) => format!("{op} {target} errno ECONNREFUSED"),
            Some(code) => format!("{op} {target} errno {code}"),
            None => format!("{op} {target} error {e}"),
        },
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Connects to `target` until `stop` exists: (connects refused with EPERM, the others).
fn flood(target: &str, stop: &std::path::Path) -> (u64, u64) {
    let Ok(addr) = target.parse::<SocketAddr>() else {
        return (0, 0);
    };
    let (mut refused, mut other) = (0u64, 0u64);
    loop {
        for _ in 0..64 {
            match TcpStream::connect(addr) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => refused += 1,
                _ => other += 1,
            }
        }
        if stop.exists() {
            return (refused, other);
        }
        // At most ~12,800 connects a second: a flood the log keeps up with on a loaded
        // machine, so the test measures accounting, not a backlog.
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn connect_mapped(target: &str) -> std::io::Result<()> {
    let addr: SocketAddr = target
        .parse()
        .map_err(|e| std::io::Error::other(format!("{e}")))?;
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("tcp-mapped takes an IPv4 address"));
    };
    let mapped: Ipv4Addr = *v4.ip();
    TcpStream::connect_timeout(
        &SocketAddr::new(mapped.to_ipv6_mapped().into(), v4.port()),
        Duration::from_secs(3),
    )
    .map(drop)
}

fn dns_reply(reply: &[u8]) -> std::io::Result<(u8, u16)> {
    secops_host_tests::dns::reply(0x5ec0, reply)
        .ok_or_else(|| std::io::Error::other("not the reply to the query"))
}

fn dnsq(name: &str, qtype: u16, server: &str, mode: &str) -> std::io::Result<(u8, u16)> {
    use std::io::Read;
    let server: SocketAddr = server
        .parse()
        .map_err(|e| std::io::Error::other(format!("{e}")))?;
    let query = secops_host_tests::dns::query(0x5ec0, name, qtype);
    let timeout = Some(Duration::from_secs(3));
    match mode {
        "tcp" => {
            let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
            stream.set_read_timeout(timeout)?;
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&query);
            stream.write_all(&framed)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len)?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply)?;
            dns_reply(&reply)
        }
        _ => {
            let bind = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let socket = UdpSocket::bind(bind)?;
            socket.set_read_timeout(timeout)?;
            let mut buf = [0u8; 4096];
            if mode == "udp-connected" {
                socket.connect(server)?;
                socket.send(&query)?;
                let n = socket.recv(&mut buf)?;
                dns_reply(&buf[..n])
            } else {
                socket.send_to(&query, server)?;
                let (n, from) = socket.recv_from(&mut buf)?;
                // What a resolver library checks: the answer comes from the server asked.
                if from != server {
                    return Err(std::io::Error::other(format!(
                        "answer from {from}, not {server}"
                    )));
                }
                dns_reply(&buf[..n])
            }
        }
    }
}

fn lookup(target: &str) -> String {
    use std::net::ToSocketAddrs;
    let (name, port) = target.rsplit_once(':').unwrap_or((target, "0"));
    let port: u16 = port.parse().unwrap_or(0);
    match (name, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            let connect = match addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                Some(a) => match TcpStream::connect_timeout(a, Duration::from_secs(3)) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => match e.raw_os_error() {
                        Some(libc::EPERM) => "errno EPERM".to_owned(),
                        _ => format!("error {e}"),
                    },
                },
                None => "none".to_owned(),
            };
            format!("lookup {name} addrs {} connect {connect}", shown.join(","))
        }
        Err(e) => format!("lookup {name} error {e}"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let op = args[i].as_str();
        let target = args.get(i + 1).cloned().unwrap_or_default();
        match op {
            "tcp" => {
                let result = target
                    .parse::<SocketAddr>()
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).map(drop));
                report(op, &target, result);
                i += 2;
            }
            "tcp-mapped" => {
                report(op, &target, connect_mapped(&target));
                i += 2;
            }
            "udp" => {
                let result = target
                    .parse::<SocketAddr>()
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|a| {
                        let bind = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                        UdpSocket::bind(bind)?.send_to(b"probe", a).map(drop)
                    });
                report(op, &target, result);
                i += 2;
            }
            "unlink" => {
                report(op, &target, std::fs::remove_file(&target));
                i += 2;
            }
            "unlinks" => {
                let count: u64 = target.parse().unwrap_or(0);
                let prefix = args.get(i + 2).cloned().unwrap_or_default();
                let started = std::time::Instant::now();
                for n in 0..count {
                    if let Ok(path) = std::ffi::CString::new(format!("{prefix}{n}")) {
                        // SAFETY: unlink(2) with a NUL-terminated path.
                        unsafe { libc::unlink(path.as_ptr()) };
                    }
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "unlinks {count} done {}",
                    started.elapsed().as_micros()
                );
                i += 3;
            }
            "flood" => {
                let stop = std::path::PathBuf::from(args.get(i + 2).cloned().unwrap_or_default());
                let (refused, other) = flood(&target, &stop);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "flood {target} refused {refused} other {other}");
                i += 3;
            }
            "hold" => {
                use std::io::Read;
                let ms: u64 = args.get(i + 2).and_then(|m| m.parse().ok()).unwrap_or(0);
                let result = target
                    .parse::<SocketAddr>()
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)))
                    .and_then(|mut stream| {
                        std::thread::sleep(Duration::from_millis(ms));
                        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
                        stream.write_all(b"x")?;
                        let mut back = [0u8; 1];
                        stream.read_exact(&mut back)
                    });
                report(op, &target, result);
                i += 3;
            }
            "lookup" => {
                let line = lookup(&target);
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
                i += 2;
            }
            "dnsq" => {
                let qtype: u16 = args.get(i + 2).and_then(|t| t.parse().ok()).unwrap_or(1);
                let server = args.get(i + 3).cloned().unwrap_or_default();
                let mode = args.get(i + 4).cloned().unwrap_or_default();
                let line = match dnsq(&target, qtype, &server, &mode) {
                    Ok((rcode, answers)) => {
                        format!("dnsq {target} {qtype} rcode {rcode} answers {answers}")
                    }
                    Err(e) => match e.raw_os_error() {
                        Some(libc::EPERM) => format!("dnsq {target} {qtype} errno EPERM"),
                        _ => format!("dnsq {target} {qtype} error {e}"),
                    },
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
                i += 5;
            }
            "sleep" => {
                std::thread::sleep(Duration::from_millis(target.parse().unwrap_or(0)));
                i += 2;
            }
            "detach" => {
                // SAFETY: fork in a single-threaded process; the children only call
                // async-signal-safe functions before continuing with plain Rust code.
                unsafe {
                    match libc::fork() {
                        -1 => return ExitCode::FAILURE,
                        0 => {
                            libc::setsid();
                            match libc::fork() {
                                -1 => libc::_exit(1),
                                0 => {}
                                _ => libc::_exit(0),
                            }
                        }
                        child => {
                            let mut status = 0;
                            libc::waitpid(child, &mut status, 0);
                            return ExitCode::SUCCESS;
                        }
                    }
                }
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "detached pid {} sid {}", std::process::id(), unsafe {
                    libc::getsid(0)
                });
                i += 1;
            }
            other => {
                eprintln!("secops-netprobe: unknown operation {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
