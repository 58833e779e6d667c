//! A test helper that talks HTTP to the daemon's API socket, so tests can call it from inside
//! an agent cgroup (started with `secops run`) or as another user. One operation per run,
//! output on stdout:
//!
//!   request SOCKET METHOD PATH [BODY]   one request; prints `STATUS BODY`
//!   concurrent SOCKET N BODY            N POST /v1/check at once, each on its own
//!                                       connection; prints `answered A of N` and each
//!                                       status and verdict count
//!   slow-headers SOCKET                 sends half a request line and waits; prints
//!                                       `closed after MS` or the status it got
//!   slow-body SOCKET PATH               sends headers promising 100 bytes, then 10, and
//!                                       waits; prints `STATUS BODY`
//!   garbage SOCKET                      sends bytes that are not HTTP; prints the status
//!   rate SOCKET PER_SEC COUNT BODY [GET_PATH]
//!                                       POST /v1/check (or GET GET_PATH) at a fixed rate on
//!                                       one kept-alive connection; prints latency
//!                                       percentiles in µs
//!   hold SOCKET N SECS                  opens N connections and keeps each busy (a GET
//!                                       /v1/whoami every second, never closing) for SECS;
//!                                       prints `holding N` once all are open, then how
//!                                       many got each status (`429 17`), `none` for those
//!                                       still waiting for a turn
//!   serve SOCKET                        a minimal blocking HTTP/1.1 server on SOCKET that
//!                                       answers every request with one fixed small JSON
//!                                       body, until killed: the floor a `rate` run over a
//!                                       Unix socket can reach on this host

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn connect(socket: &str) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {socket}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s
}

fn request_bytes(method: &str, path: &str, body: &str, close: bool) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: secops\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

/// The Content-Length a message's headers give (0 when absent or not a number).
fn content_length(headers: &[httparse::Header]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Reads one response (status, body) by its Content-Length.
fn read_response(stream: &mut UnixStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = response.parse(&buf) {
            let length = content_length(response.headers);
            let status = response.code?;
            while buf.len() < head + length {
                let n = stream.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((
                status,
                String::from_utf8_lossy(&buf[head..head + length]).into_owned(),
            ));
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one request (headers, then a Content-Length body) into `buf`; false at end of
/// stream or on anything that is not a request.
fn read_request(stream: &mut UnixStream, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let length = content_length(request.headers);
                if buf.len() >= head + length {
                    return true;
                }
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return false,
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves one connection at a time, each request answered with the same bytes: no
/// routing, no decision, no runtime. The same client against it measures what the host's
/// scheduler and socket layer cost by themselves.
fn serve_fixed(socket: &str) {
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .unwrap_or_else(|e| panic!("bind {socket}: {e}"));
    let body = r#"{"pid":1,"uid":0,"gid":0,"role":"agent","agent":"bench"}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = Vec::with_capacity(8192);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        while read_request(&mut stream, &mut buf) {
            if stream.write_all(response.as_bytes()).is_err() {
                break;
            }
        }
    }
}

fn one(socket: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = connect(socket);
    s.write_all(&request_bytes(method, path, body, true)).ok()?;
    read_response(&mut s)
}

fn print_response(r: Option<(u16, String)>) {
    match r {
        Some((status, body)) => println!("{status} {body}"),
        None => println!("closed"),
    }
}

/// Holds `n` connections open and busy for `secs`, then tallies the first answer of each.
fn hold(socket: &str, n: usize, secs: u64) {
    let whoami = request_bytes("GET", "/v1/whoami", "", false);
    let mut streams: Vec<UnixStream> = (0..n).map(|_| connect(socket)).collect();
    println!("holding {n}");
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        for s in &mut streams {
            // A refused connection is closed; its writes fail, which is fine.
            let _ = s.write_all(&whoami);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for s in &mut streams {
        s.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let status = read_response(s).map_or_else(|| "none".to_owned(), |(st, _)| st.to_string());
        *tally.entry(status).or_default() += 1;
    }
    for (k, v) in tally {
        println!("{k} {v}");
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let socket = arg(1);
    match arg(0) {
        "request" => print_response(one(socket, arg(2), arg(3), arg(4))),
        "concurrent" => {
            let n: usize = arg(2).parse().expect("N");
            let body = arg(3).to_owned();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    let (socket, body, barrier) =
                        (socket.to_owned(), body.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let mut s = connect(&socket);
                        barrier.wait();
                        s.write_all(&request_bytes("POST", "/v1/check", &body, true))
                            .ok()?;
                        read_response(&mut s)
                    })
                })
                .collect();
            let mut tally: BTreeMap<String, usize> = BTreeMap::new();
            let mut answered = 0;
            for t in threads {
                if let Ok(Some((status, body))) = t.join() {
                    answered += 1;
                    let verdict = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["verdict"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    *tally.entry(format!("{status} {verdict}")).or_default() += 1;
                }
            }
            println!("answered {answered} of {n}");
            for (k, v) in tally {
                println!("{k} {v}");
            }
        }
        "hold" => hold(
            socket,
            arg(2).parse().expect("N"),
            arg(3).parse().expect("SECS"),
        ),
        "slow-headers" => {
            let mut s = connect(socket);
            let started = Instant::now();
            s.write_all(b"POST /v1/check HT").ok();
            match read_response(&mut s) {
                Some((status, body)) => println!("{status} {body}"),
                None => println!("closed after {}", started.elapsed().as_millis()),
            }
        }
        "slow-body" => {
            let mut s = connect(socket);
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: secops\r\nContent-Length: 100\r\n\r\n{{\"action\":",
                arg(2)
            );
            s.write_all(head.as_bytes()).ok();
            print_response(read_response(&mut s));
        }
        "garbage" => {
            let mut s = connect(socket);
            s.write_all(b"\x16\x03\x01\x02\x00 this is not http\r\n\r\n")
                .ok();
            print_response(read_response(&mut s));
        }
        "rate" => {
            let per_sec: u64 = arg(2).parse().expect("PER_SEC");
            let count: usize = arg(3).parse().expect("COUNT");
            let request = match arg(5) {
                "" => request_bytes("POST", "/v1/check", arg(4), false),
                path => request_bytes("GET", path, "", false),
            };
            let mut s = connect(socket);
            let interval = Duration::from_nanos(1_000_000_000 / per_sec.max(1));
            let mut next = Instant::now();
            let mut micros = Vec::with_capacity(count);
            for _ in 0..count {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next += interval;
                let started = Instant::now();
                s.write_all(&request).expect("write");
                let (status, body) = read_response(&mut s).expect("response");
                assert_eq!(status, 200, "{body}");
                micros.push(started.elapsed().as_micros() as u64);
            }
            micros.sort_unstable();
            println!(
                "n {} p50 {} p90 {} p99 {} p999 {} max {}",
                micros.len(),
                percentile(&micros, 0.50),
                percentile(&micros, 0.90),
                percentile(&micros, 0.99),
                percentile(&micros, 0.999),
                micros[micros.len() - 1]
            );
        }
        "serve" => serve_fixed(socket),
        other => {
            eprintln!("unknown operation {other:?}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
