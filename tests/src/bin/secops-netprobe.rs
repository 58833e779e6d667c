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
//!   detach               fork, setsid, fork: the rest runs in a grandchild (double fork)
//!   sleep MS             wait

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
