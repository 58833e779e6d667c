//! One DNS listener per agent: UDP and TCP on one port of 127.0.0.1 (and of [::1] where the
//! host has IPv6 loopback), chosen by the kernel. The cgroup programs send the agent's port-53
//! traffic to that port, so the port a query arrives on says which agent asked: the kernel
//! says so, not the packet.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

/// Who a listener answers for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AgentRef {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) cgroup_id: u64,
}

/// The sockets of one agent's listener, bound and not yet served.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) agent: AgentRef,
    pub(crate) port: u16,
    pub(crate) udp4: UdpSocket,
    pub(crate) tcp4: TcpListener,
    /// `None` where the host has no IPv6 loopback (then agents have no IPv6 to ask over).
    pub(crate) udp6: Option<UdpSocket>,
    pub(crate) tcp6: Option<TcpListener>,
}

/// Tries a free port for all four sockets: the kernel picks the UDP port, the others must
/// get the same one (rarely taken; then another is tried).
const ATTEMPTS: usize = 32;

impl Listener {
    /// Binds the listener for `agent`, on `preferred` if that port is free (a restarted
    /// daemon keeps the ports the pinned programs already send to), else on a new one.
    pub(crate) fn bind(agent: AgentRef, preferred: Option<u16>) -> io::Result<Listener> {
        if let Some(port) = preferred {
            if let Ok(listener) = Self::bind_on(&agent, port) {
                return Ok(listener);
            }
        }
        let mut last = io::Error::other("no port found");
        for _ in 0..ATTEMPTS {
            match Self::bind_on(&agent, 0) {
                Ok(listener) => return Ok(listener),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn bind_on(agent: &AgentRef, port: u16) -> io::Result<Listener> {
        let udp4 = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let port = udp4.local_addr()?.port();
        let tcp4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let (udp6, tcp6) = match UdpSocket::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
            Ok(udp6) => (
                Some(udp6),
                Some(TcpListener::bind(SocketAddr::from((
                    Ipv6Addr::LOCALHOST,
                    port,
                )))?),
            ),
            // No IPv6 loopback on this host.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => (None, None),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => (None, None),
            Err(e) => return Err(e),
        };
        for s in [&udp4].into_iter().chain(udp6.as_ref()) {
            s.set_nonblocking(true)?;
        }
        for s in [&tcp4].into_iter().chain(tcp6.as_ref()) {
            s.set_nonblocking(true)?;
        }
        Ok(Listener {
            agent: agent.clone(),
            port,
            udp4,
            tcp4,
            udp6,
            tcp6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_sockets_share_one_port_and_a_preferred_port_is_taken_again() {
        let agent = AgentRef {
            index: 1,
            name: "a".into(),
            cgroup_id: 9,
        };
        let first = Listener::bind(agent.clone(), None).expect("bind");
        assert_ne!(first.port, 0);
        assert_eq!(first.tcp4.local_addr().unwrap().port(), first.port);
        if let Some(udp6) = &first.udp6 {
            assert_eq!(udp6.local_addr().unwrap().port(), first.port);
        }
        let port = first.port;
        // Taken: another port.
        let second = Listener::bind(agent.clone(), Some(port)).expect("bind");
        assert_ne!(second.port, port);
        drop(first);
        let again = Listener::bind(agent, Some(port)).expect("bind");
        assert_eq!(again.port, port);
    }
}
