//! Hostile clients against the real binary: headers that never finish,
//! bodies that never finish, thousands of idle connections, bodies built to
//! hurt the parser. The host must close what stalls, keep answering health
//! checks, refuse with a reason, and store nothing it refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use weft_tests::{HostSetup, PipelineSpec, free_addr, post_json};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// Wait (bounded) until the server closes `stream`; returns what it sent.
fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Option<String> {
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&out).into_owned());
            }
            Err(_) => return None,
        }
    }
}

/// `GET /healthz` on a new connection; how long it took.
fn health(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(answer);
    }
    Ok(started.elapsed())
}

fn stored_events(setup: &HostSetup) -> u64 {
    let out = std::process::Command::new(WEFT)
        .args(["pipeline", "status", "--json", "--config"])
        .arg(&setup.config_path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["accepted"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_idle_and_malformed_clients_are_refused_and_health_keeps_answering() {
    let listen = free_addr();
    let setup = HostSetup::new(
        listen,
        &[PipelineSpec::leads("leads", "http://127.0.0.1:9/x")],
    )
    .unwrap()
    .server_line("header_timeout_ms = 800\nbody_timeout_ms = 800\nmax_connections = 600\nmax_connections_per_peer = 500")
    .unwrap();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);

    // Headers that never finish: closed once the header timeout passes.
    let mut slow_headers = TcpStream::connect(listen).unwrap();
    slow_headers
        .write_all(b"POST /hooks/leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(
        read_until_closed(&mut slow_headers, Duration::from_secs(30)).is_some(),
        "a connection whose headers never finish is closed"
    );
    let header_close = started.elapsed();

    // A body that never finishes: 408, nothing stored.
    let mut slow_body = TcpStream::connect(listen).unwrap();
    slow_body
        .write_all(b"POST /hooks/leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":")
        .unwrap();
    let answer = read_until_closed(&mut slow_body, Duration::from_secs(30)).unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout_ms"), "{answer}");

    // 2,000 idle connections: over the limits, new connections take the
    // place of the idlest; health keeps answering throughout.
    let mut idle = Vec::new();
    let mut worst = Duration::ZERO;
    for i in 0..2000 {
        if let Ok(s) = TcpStream::connect(listen) {
            idle.push(s);
        }
        if i % 250 == 0 {
            worst = worst.max(health(listen).expect("health answers"));
        }
    }
    worst = worst.max(health(listen).expect("health answers with 2,000 idle connections"));
    assert!(worst < Duration::from_secs(5), "health took {worst:?}");
    // The idle ones are all closed: by eviction or by the header timeout.
    let closed = idle
        .iter_mut()
        .map(|s| read_until_closed(s, Duration::from_secs(30)).is_some())
        .filter(|closed| *closed)
        .count();
    assert_eq!(closed, idle.len(), "every idle connection is closed");
    eprintln!(
        "slow headers closed after {header_close:?}; with {} idle connections opened, health answered within {worst:?}; all closed",
        idle.len()
    );

    // Bodies built to hurt: invalid UTF-8 and deep nesting are refused with
    // a reason; nothing is stored.
    let before = stored_events(&setup);
    let url = format!("http://{listen}/hooks/leads");
    let bad_utf8 = b"{\"id\": \"a\", \"email\": \"\xff\xfe@example.com\"}";
    let (status, answer) = post_json(&url, bad_utf8, "application/json").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("UTF-8"),
        "{answer}"
    );
    let deep = format!(
        "{{\"id\": \"d\", \"x\": {}1{}}}",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let (status, answer) = post_json(&url, deep.as_bytes(), "application/json").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("deeper than"),
        "{answer}"
    );
    assert_eq!(stored_events(&setup), before, "nothing refused was stored");
    host.sigterm();
}

/// Write a whole request (headers, then the body in pieces) before reading
/// a byte of the answer, as most clients do; then the answer.
fn send_whole_then_read(addr: SocketAddr, head: &str, body: &[u8], chunked: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(64 << 10) {
        let written = if chunked {
            s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|_| s.write_all(piece))
                .and_then(|_| s.write_all(b"\r\n"))
        } else {
            s.write_all(piece)
        };
        if let Err(e) = written {
            return format!("the body could not be written: {e}");
        }
    }
    if chunked {
        let _ = s.write_all(b"0\r\n\r\n");
    }
    read_until_closed(&mut s, Duration::from_secs(30)).unwrap_or_default()
}

#[test]
fn a_sender_still_writing_a_refused_body_gets_the_refusal_not_a_reset() {
    let listen = free_addr();
    let setup = HostSetup::new(
        listen,
        &[PipelineSpec::leads("leads", "http://127.0.0.1:9/x")],
    )
    .unwrap()
    .server_line("max_body_bytes = 65536")
    .unwrap();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let body = vec![b' '; 6 << 20];
    // Declared too large: refused before a byte is read.
    let declared = send_whole_then_read(
        listen,
        &format!(
            "POST /hooks/leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        &body,
        false,
    );
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains("max_body_bytes"), "{declared}");
    // Not declared (chunked): refused once past the limit.
    let chunked = send_whole_then_read(
        listen,
        "POST /hooks/leads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        &body,
        true,
    );
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    // A wrong content type, refused before the body.
    let typed = send_whole_then_read(
        listen,
        "POST /hooks/leads HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 60000\r\n\r\n",
        &body[..60000],
        false,
    );
    assert!(typed.starts_with("HTTP/1.1 415"), "{typed}");
    assert_eq!(stored_events(&setup), 0, "nothing refused was stored");
    host.sigterm();
}
