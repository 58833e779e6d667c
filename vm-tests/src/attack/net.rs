//! Sockets the agent may not have (raw, packet) and connections its egress policy does not
//! allow, including an IPv4 address written as an IPv4-mapped IPv6 one (the connect6 path).
//! Only 127.0.0.1 is ever dialled.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream};
use std::time::Duration;

use super::judge::{judge_call, Outcome};
use super::sys::{check_int, owned_fd};
use super::Ctx;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<String> {
    // SAFETY: socket(2) takes plain integers.
    let fd = check_int(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) })?;
    // Closed at once: the point is only whether the kernel hands one out.
    drop(owned_fd(fd));
    Ok("got a socket (closed at once)".into())
}

/// socket(AF_INET, SOCK_RAW, IPPROTO_ICMP).
pub fn raw_socket(_: &Ctx) -> Outcome {
    judge_call(
        "socket(2) AF_INET SOCK_RAW IPPROTO_ICMP",
        socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
    )
}

/// socket(AF_PACKET, SOCK_RAW, 0): protocol 0 so it receives nothing while it exists.
pub fn packet_socket(_: &Ctx) -> Outcome {
    judge_call(
        "socket(2) AF_PACKET SOCK_RAW 0",
        socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
    )
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// [::ffff:127.0.0.1]:port: std opens an AF_INET6 socket for a V6 address.
fn mapped(port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
        port,
        0,
        0,
    ))
}

fn connect(addr: SocketAddr) -> io::Result<String> {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map(|_| "connected".into())
}

/// AF_INET6 TCP connect to [::ffff:127.0.0.1]:blocked-port.
pub fn connect_mapped(ctx: &Ctx) -> Outcome {
    let addr = mapped(ctx.args.blocked_port);
    judge_call(&format!("connect(2) AF_INET6 {addr}"), connect(addr))
}

/// AF_INET TCP connect to 127.0.0.1:blocked-port.
pub fn connect_blocked(ctx: &Ctx) -> Outcome {
    let addr = loopback(ctx.args.blocked_port);
    judge_call(&format!("connect(2) AF_INET {addr}"), connect(addr))
}

pub fn connect_allowed(ctx: &Ctx) -> Result<(), String> {
    let addr = loopback(ctx.args.allowed_port);
    connect(addr)
        .map(drop)
        .map_err(|e| format!("connect(2) AF_INET {addr}: {}", super::sys::describe(&e)))
}

pub fn connect_allowed_mapped(ctx: &Ctx) -> Result<(), String> {
    let addr = mapped(ctx.args.allowed_port);
    connect(addr)
        .map(drop)
        .map_err(|e| format!("connect(2) AF_INET6 {addr}: {}", super::sys::describe(&e)))
}
