//! `secops audit witness-serve`: an HTTP witness. Keeps every checkpoint line POSTed to it
//! (signature checked) appended and synced to one file, and answers GET with the file, for
//! `verify --witness URL`. One connection at a time: a daemon sends a few lines a second.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::parse_witness_text;

const MAX_BODY: usize = 16 << 20;

/// Serves until the process is stopped.
pub fn serve(listen: SocketAddr, file: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut out = OpenOptions::new()
        .append(true)
        .create(true)
        .read(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)
        .with_context(|| format!("opening the witness file {}", file.display()))?;
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    eprintln!(
        "secops witness: listening on {}, keeping checkpoints in {}",
        listener.local_addr()?,
        file.display()
    );
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        if let Err(e) = handle(&mut conn, &mut out, file) {
            tracing::warn!("witness request failed: {e}");
            let _ = reply(&mut conn, 400, e.to_string().as_bytes());
        }
    }
    Ok(())
}

fn handle(conn: &mut TcpStream, out: &mut std::fs::File, file: &Path) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let (method, path, body_at, length) = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("the request ends inside its headers".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(at)) => {
                let length = super::http::content_length(req.headers).unwrap_or(0);
                break (
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("").to_owned(),
                    at,
                    length,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => continue,
            Ok(httparse::Status::Partial) => return Err(bad("headers too long".into())),
            Err(e) => return Err(bad(format!("not HTTP: {e}"))),
        }
    };
    if length > MAX_BODY {
        return reply(conn, 413, b"too large\n");
    }
    while buf.len() < body_at + length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("the body ends early".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[body_at..body_at + length];
    match method.as_str() {
        "GET" => {
            let text = std::fs::read(file)?;
            reply(conn, 200, &text)
        }
        "POST" => {
            let text = String::from_utf8_lossy(body);
            let (lines, garbled) = parse_witness_text(&text);
            if !garbled.is_empty() {
                return reply(
                    conn,
                    400,
                    format!("not checkpoint lines: {garbled:?}\n").as_bytes(),
                );
            }
            if let Some(bad) = lines.iter().find(|l| !l.signature_holds()) {
                return reply(
                    conn,
                    400,
                    format!(
                        "checkpoint {} of log {} is not signed by the key it names\n",
                        bad.number, bad.log_id
                    )
                    .as_bytes(),
                );
            }
            let all: String = lines.iter().map(|l| l.json_line()).collect();
            out.write_all(all.as_bytes())?;
            out.sync_data()?;
            tracing::info!(path = %path, checkpoints = lines.len(), "witnessed");
            reply(
                conn,
                200,
                format!("{} checkpoint(s) kept\n", lines.len()).as_bytes(),
            )
        }
        _ => reply(conn, 405, b"GET or POST\n"),
    }
}

fn reply(conn: &mut TcpStream, status: u16, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        _ => "Error",
    };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}
