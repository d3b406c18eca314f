//! Raw sockets: what a misbehaving client does, whether the server still accepts
//! connections, a tiny safety-desk webhook receiver, and waiting on database locks.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::PgConnection;
use serde_json::Value;

use super::pg::count;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// True when a TCP connection to the port is refused (nothing listens).
pub fn connect_refused(port: u16) -> bool {
    match TcpStream::connect_timeout(&addr(port), Duration::from_millis(500)) {
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
    }
}

/// Waits until connections to `port` are refused; returns when.
pub async fn wait_refused(port: u16, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if connect_refused(port) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "connections to {port} still accepted {within:?} after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A transaction of the test's own that holds a subject's row (`FOR UPDATE`): inserts of
/// that subject's records wait on it (their foreign key check), holding their pool
/// connection, until `release`.
pub struct RowLock {
    conn: PgConnection,
    pid: i64,
}

impl RowLock {
    pub fn subject(mut conn: PgConnection, code: &str) -> Self {
        conn.batch_execute(&format!(
            "BEGIN; SELECT 1 FROM subjects WHERE subject_code = '{code}' FOR UPDATE"
        ))
        .expect("lock the subject row");
        let pid = count(&mut conn, "SELECT pg_backend_pid()::bigint AS n");
        Self { conn, pid }
    }

    /// Waits until `n` sessions (the server's) wait on this lock.
    pub async fn wait_blocked(&mut self, n: i64, within: Duration) {
        let deadline = Instant::now() + within;
        let sql = format!(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE {} = ANY(pg_blocking_pids(pid))",
            self.pid
        );
        loop {
            let waiting = count(&mut self.conn, &sql);
            if waiting >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {waiting} of {n} requests reached the row lock within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn release(mut self) {
        self.conn.batch_execute("COMMIT").expect("release the row");
    }
}

/// The soft RLIMIT_NOFILE of this process (what its children inherit too).
pub fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// The kernel's count of connections dropped because a listen queue was full (all
/// sockets of this network namespace), from /proc/net/netstat.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let i = names
        .split_whitespace()
        .position(|h| h == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// `n` connections that send nothing, and how many of them took over 900 ms to connect
/// (a SYN dropped because the listen backlog was full, retried by the kernel after 1 s).
pub fn open_idle(port: u16, n: usize) -> (Vec<TcpStream>, usize) {
    let mut slow = 0;
    let conns = (0..n)
        .map(|i| {
            let t = Instant::now();
            let c = TcpStream::connect_timeout(&addr(port), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
            if t.elapsed() > Duration::from_millis(900) {
                slow += 1;
            }
            c
        })
        .collect();
    (conns, slow)
}

/// How many of `conns` the server still holds open (nothing to read, no EOF).
pub fn count_open(conns: &[TcpStream]) -> usize {
    let mut buf = [0u8; 1];
    conns
        .iter()
        .filter(|c| {
            c.set_nonblocking(true).expect("nonblocking");
            let open = matches!(c.peek(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock);
            c.set_nonblocking(false).expect("blocking");
            open
        })
        .count()
}

fn read_head(stream: &mut TcpStream, within: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(within))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

pub struct Oversized {
    pub status_line: String,
    pub answered_after: Duration,
    /// bytes of the rest the connection still took after the 413, before it failed
    pub accepted_after: usize,
    pub cut_after: Duration,
    pub rest_error: String,
}

impl fmt::Display for Oversized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` {} ms after the head and the first KiB; sending the rest slowly, the \
             connection took {} more bytes and failed ({}) {} ms after the answer",
            self.status_line,
            self.answered_after.as_millis(),
            self.accepted_after,
            self.rest_error,
            self.cut_after.as_millis()
        )
    }
}

/// Declares a `len`-byte JSON body, sends its first KiB and waits for the answer: it must be
/// a 413 that arrives before the rest is sent. Then sends the rest at ~3 MB/s: the server
/// discards it for a moment (actix lingers so that the client reads the 413 rather than a
/// reset) and then closes the connection, long before `len` bytes.
pub fn oversized_body(port: u16, path: &str, token: Option<&str>, len: usize) -> Oversized {
    let mut s = TcpStream::connect(addr(port)).expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {len}\r\n\r\n"
    );
    let first = vec![b' '; 1024];
    let started = Instant::now();
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(&first).expect("send the first kilobyte");
    let answer = read_head(&mut s, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no answer to a {len}-byte body after 1 KiB of it: {e}"));
    let answered = Instant::now();
    let status_line = answer.lines().next().unwrap_or_default().to_owned();
    assert!(
        status_line.starts_with("HTTP/1.1 413"),
        "{path}: expected 413 after the first KiB of a {len}-byte body, got: {answer}"
    );
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let chunk = vec![b' '; 64 * 1024];
    let mut accepted = 0usize;
    let rest = len - first.len();
    let rest_error = loop {
        if accepted >= rest {
            break "none: the whole body was taken".to_owned();
        }
        match s.write(&chunk[..chunk.len().min(rest - accepted)]) {
            Ok(0) => break "a zero-byte write".to_owned(),
            Ok(n) => accepted += n,
            Err(e) => break format!("{:?}", e.kind()),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cut_after = answered.elapsed();
    let _ = s.shutdown(Shutdown::Both);
    assert!(
        accepted < rest,
        "{path}: the server read the whole {len}-byte body after answering 413"
    );
    Oversized {
        status_line,
        answered_after: answered - started,
        accepted_after: accepted,
        cut_after,
        rest_error,
    }
}

pub struct SlowHead {
    pub cut_after: Duration,
    pub bytes_sent: usize,
    pub head_len: usize,
    pub answer: String,
}

impl fmt::Display for SlowHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cut off after {} ms, {} of {} head bytes sent; the server said {:?}",
            self.cut_after.as_millis(),
            self.bytes_sent,
            self.head_len,
            self.answer.lines().next().unwrap_or("nothing")
        )
    }
}

/// Sends a request head one byte every `every`, until the server answers or closes.
pub fn slow_head(port: u16, every: Duration) -> SlowHead {
    let head = format!(
        "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: a-very-slow-client\r\n\
         X-Padding: {}\r\n\r\n",
        "p".repeat(120)
    );
    let mut s = TcpStream::connect(addr(port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for (i, byte) in head.bytes().enumerate() {
        if s.write_all(&[byte]).is_err() {
            return SlowHead {
                cut_after: started.elapsed(),
                bytes_sent: i,
                head_len: head.len(),
                answer: String::from_utf8_lossy(&answer).into_owned(),
            };
        }
        std::thread::sleep(every);
        s.set_nonblocking(true).expect("nonblocking");
        let read = s.read(&mut buf);
        s.set_nonblocking(false).expect("blocking");
        match read {
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Ok(n) => {
                let cut_after = started.elapsed();
                answer.extend_from_slice(&buf[..n]);
                // the rest of the answer, if any, then EOF
                s.set_read_timeout(Some(Duration::from_secs(1))).ok();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    answer.extend_from_slice(&buf[..n]);
                }
                return SlowHead {
                    cut_after,
                    bytes_sent: i + 1,
                    head_len: head.len(),
                    answer: String::from_utf8_lossy(&answer).into_owned(),
                };
            }
            Err(_) => {
                return SlowHead {
                    cut_after: started.elapsed(),
                    bytes_sent: i + 1,
                    head_len: head.len(),
                    answer: String::new(),
                };
            }
        }
    }
    panic!(
        "the whole head ({} bytes over {:?}) was sent without the server cutting it off",
        head.len(),
        started.elapsed()
    );
}

/// What the desk got: X-Casebook-Alert-Id and the JSON body.
pub type Delivery = (Option<String>, Value);

/// A safety desk: answers 200 to every POST, keeping what it got.
pub struct Desk {
    pub url: String,
    port: u16,
    received: Arc<Mutex<Vec<Delivery>>>,
    stop: Arc<AtomicBool>,
}

impl Desk {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the desk");
        let port = listener.local_addr().expect("desk addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = stream {
                    if let Some(got) = receive(s) {
                        r.lock().expect("desk").push(got);
                    }
                }
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/sae"),
            port,
            received,
            stop,
        }
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.received.lock().expect("desk").clone()
    }
}

impl Drop for Desk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(addr(self.port));
    }
}

fn receive(mut s: TcpStream) -> Option<Delivery> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length")?.parse().ok()?;
    while data.len() < head_end + len {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::from_slice(&data[head_end..head_end + len]).unwrap_or(Value::Null);
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    Some((header("x-casebook-alert-id"), body))
}
