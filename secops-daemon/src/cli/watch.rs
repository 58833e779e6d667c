//! `secops approvals watch`: the open tickets, redrawn every interval, decided with one key.
//! The terminal is in raw mode (no echo, keys as they are typed) while it runs and is given
//! back as it was, whatever ends the loop.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::daemon::SocketArg;
use super::ticket_table::{ticket_row, HEADER};
use crate::approvals::Ticket;
use crate::time::now_ns;

#[derive(Deserialize)]
struct TicketList {
    tickets: Vec<Ticket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Up,
    Down,
    Approve { once: bool },
    Deny,
    Quit,
    Other,
}

/// The terminal in raw mode until dropped.
struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    fn enable(fd: i32) -> anyhow::Result<RawMode> {
        // SAFETY: termios is plain old data; tcgetattr fills it in.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes only into `saved`.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error()).context("reading the terminal's mode");
        }
        let mut raw = saved;
        // Keys one at a time, unechoed; Ctrl-C arrives as a key (and quits cleanly).
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: tcsetattr reads `raw`, a copy of what tcgetattr gave.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setting the terminal's mode");
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the mode read in `enable`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

fn terminal_width() -> Option<usize> {
    // SAFETY: winsize is plain old data; TIOCGWINSZ fills it in.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes only into `size`.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// The next key, or `None` if none came within `timeout`.
fn read_key(timeout: Duration) -> anyhow::Result<Option<Key>> {
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one pollfd, which poll(2) may write `revents` of.
    let ready = unsafe { libc::poll(&mut poll, 1, millis) };
    if ready < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(None);
        }
        return Err(e).context("waiting for a key");
    }
    if ready == 0 {
        return Ok(None);
    }
    let mut buffer = [0u8; 8];
    // SAFETY: read(2) into a buffer of its stated length.
    let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
    if n <= 0 {
        // The terminal went away: stop.
        return Ok(Some(Key::Quit));
    }
    Ok(Some(key(&buffer[..n as usize])))
}

fn key(bytes: &[u8]) -> Key {
    match bytes {
        b"\x1b[A" | b"k" => Key::Up,
        b"\x1b[B" | b"j" => Key::Down,
        b"a" => Key::Approve { once: false },
        b"o" => Key::Approve { once: true },
        b"d" => Key::Deny,
        b"q" | b"\x03" | b"\x04" => Key::Quit,
        _ => Key::Other,
    }
}

fn draw(tickets: &[Ticket], selected: usize, note: &str, grant_for: &str) -> std::io::Result<()> {
    let width = terminal_width();
    let now = now_ns();
    let mut screen = String::from("\x1b[H\x1b[2J");
    screen.push_str(&format!(
        "secops approvals watch: {} open   [a] approve for {grant_for}  [o] approve once  [d] deny  [j/k] move  [q] quit\r\n\r\n",
        tickets.len()
    ));
    screen.push_str(&format!("  {HEADER}\r\n"));
    if tickets.is_empty() {
        screen.push_str("  (no open tickets; waiting for one)\r\n");
    }
    for (i, t) in tickets.iter().enumerate() {
        let marker = if i == selected { '>' } else { ' ' };
        let row = ticket_row(t, now, width.map(|w| w.saturating_sub(2)));
        screen.push_str(&format!("{marker} {row}\r\n"));
    }
    if let Some(t) = tickets.get(selected) {
        screen.push_str(&format!("\r\n  #{}: {}\r\n", t.id, t.reason));
    }
    if !note.is_empty() {
        screen.push_str(&format!("\r\n{note}\r\n"));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(screen.as_bytes())?;
    out.flush()
}

pub fn run(socket: &SocketArg, grant_for: &str, interval: u64) -> anyhow::Result<u8> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("`approvals watch` needs a terminal; scripts use `secops approvals list --json`");
    }
    let _raw = RawMode::enable(stdin.as_raw_fd())?;
    let client = socket.client();
    let mut selected = 0usize;
    let mut note = String::new();
    loop {
        let tickets = match client.get::<TicketList>("/v1/approvals?status=open&limit=100") {
            Ok(list) => list.tickets,
            Err(e) => {
                note = format!("cannot read the queue: {e}");
                Vec::new()
            }
        };
        selected = selected.min(tickets.len().saturating_sub(1));
        draw(&tickets, selected, &note, grant_for)?;
        let Some(key) = read_key(Duration::from_secs(interval.max(1)))? else {
            continue;
        };
        match key {
            Key::Quit => break,
            Key::Up => selected = selected.saturating_sub(1),
            Key::Down => selected = (selected + 1).min(tickets.len().saturating_sub(1)),
            Key::Other => {}
            Key::Approve { .. } | Key::Deny if tickets.get(selected).is_some() => {
                let id = tickets[selected].id;
                let (verb, body) = match key {
                    Key::Approve { once } => (
                        "approve",
                        serde_json::json!({
                            "for": grant_for,
                            "once": once,
                            "reason": "decided in secops approvals watch",
                        }),
                    ),
                    _ => (
                        "deny",
                        serde_json::json!({"reason": "decided in secops approvals watch"}),
                    ),
                };
                let answer: Result<Ticket, _> =
                    client.post(&format!("/v1/approvals/{id}/{verb}"), &body);
                note = match answer {
                    Ok(t) => format!(
                        "ticket #{id} {} by {}",
                        t.status,
                        t.decided_by.unwrap_or_default()
                    ),
                    Err(e) => format!("ticket #{id}: {e}"),
                };
            }
            Key::Approve { .. } | Key::Deny => note = "no ticket to decide".to_owned(),
        }
    }
    print!("\r\n");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_as_typed() {
        assert_eq!(key(b"a"), Key::Approve { once: false });
        assert_eq!(key(b"o"), Key::Approve { once: true });
        assert_eq!(key(b"d"), Key::Deny);
        assert_eq!(key(b"\x1b[A"), Key::Up);
        assert_eq!(key(b"j"), Key::Down);
        assert_eq!(key(b"\x03"), Key::Quit);
        assert_eq!(key(b"x"), Key::Other);
    }
}
