//! The write load: client tasks posting temperatures and adverse events, each with an
//! Idempotency-Key, recording every attempt (status, Retry-After, transport error, time) and
//! every acknowledged write (the id the server returned).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::api;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Temperature,
    AdverseEvent,
}

impl Kind {
    pub fn table(self) -> &'static str {
        match self {
            Self::Temperature => "temperatures",
            Self::AdverseEvent => "adverse_events",
        }
    }
    /// Where its rows are (form records of the form `temperature` or `adverse_event`).
    pub fn rows(self) -> &'static str {
        match self {
            Self::Temperature => "form_records WHERE form_id = 'temperature'",
            Self::AdverseEvent => "form_records WHERE form_id = 'adverse_event'",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Self::Temperature => "temperatures",
            Self::AdverseEvent => "adverse-events",
        }
    }
}

/// One client's identity: who writes, about whom.
#[derive(Clone)]
pub struct Writer {
    pub token: String,
    pub subject: String,
}

#[derive(Clone)]
pub struct Config {
    /// Servers to spread the requests over (client i's attempt j goes to base (i + j) % n).
    pub bases: Vec<String>,
    /// Retry a write (same key) after a 5xx or a transport error until it is acknowledged,
    /// as a careful client does; else each attempt is a write of its own.
    pub retry_until_acked: bool,
    /// After `stop`, how long a client may keep retrying its last write.
    pub finish_within: Duration,
    /// Reuse connections (reqwest's default) or open one per request.
    pub keep_alive: bool,
}

impl Config {
    pub fn retrying(bases: Vec<String>) -> Self {
        Self {
            bases,
            retry_until_acked: true,
            finish_within: Duration::from_secs(20),
            keep_alive: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub client: usize,
    pub kind: Kind,
    pub key: String,
    /// sent as X-Request-Id
    pub request_id: String,
    pub base: usize,
    /// None: a transport error (connection refused or reset, timeout)
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    pub content_type: String,
    pub error: Option<String>,
    pub text: String,
    pub started: Instant,
    pub ended: Instant,
}

#[derive(Debug, Clone)]
pub struct Ack {
    pub kind: Kind,
    /// the Idempotency-Key it was sent with ("" if none)
    pub key: String,
    pub id: i64,
}

#[derive(Default)]
struct ClientResult {
    acks: Vec<Ack>,
    gave_up: Vec<String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    pub attempts: Arc<Mutex<Vec<Attempt>>>,
    tasks: Vec<tokio::task::JoinHandle<ClientResult>>,
}

pub struct Report {
    pub attempts: Vec<Attempt>,
    pub acks: Vec<Ack>,
    /// keys of writes still unacknowledged when the client had to stop
    pub gave_up: Vec<String>,
}

impl Load {
    pub fn start(writers: &[Writer], cfg: &Config) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let tasks = writers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                tokio::spawn(client_loop(
                    i,
                    w.clone(),
                    cfg.clone(),
                    stop.clone(),
                    attempts.clone(),
                ))
            })
            .collect();
        Self {
            stop,
            attempts,
            tasks,
        }
    }

    /// Waits until an attempt that started at or after `since` is acknowledged; returns when
    /// it ended, or None after `within`.
    pub async fn first_success_since(&self, since: Instant, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .attempts
                .lock()
                .expect("attempts")
                .iter()
                .filter(|a| a.started >= since && a.status.is_some_and(|s| s < 300))
                .map(|a| a.ended)
                .min();
            if found.is_some() {
                return found;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let mut acks = Vec::new();
        let mut gave_up = Vec::new();
        for t in self.tasks {
            let r = t.await.expect("load client task");
            acks.extend(r.acks);
            gave_up.extend(r.gave_up);
        }
        let attempts = self.attempts.lock().expect("attempts").clone();
        Report {
            attempts,
            acks,
            gave_up,
        }
    }
}

async fn client_loop(
    i: usize,
    w: Writer,
    cfg: Config,
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
) -> ClientResult {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(2));
    if !cfg.keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    let client = builder.build().expect("client");
    let mut out = ClientResult::default();
    let mut n: u64 = 0;
    let mut stop_seen: Option<Instant> = None;
    'writes: while !stop.load(Ordering::SeqCst) {
        let kind = if n.is_multiple_of(2) {
            Kind::Temperature
        } else {
            Kind::AdverseEvent
        };
        let body = match kind {
            Kind::Temperature => api::temperature(n * 16 + i as u64),
            Kind::AdverseEvent => api::mild_event(),
        };
        let key = format!("load-c{i}-w{n}");
        let mut try_no = 0usize;
        loop {
            let base = (i + try_no + n as usize) % cfg.bases.len();
            let url = format!(
                "{}/api/v1/subjects/{}/{}",
                cfg.bases[base],
                w.subject,
                kind.path()
            );
            let request_id = format!("{key}-t{try_no}");
            let started = Instant::now();
            let r = api::send_with(
                &client,
                reqwest::Method::POST,
                &url,
                Some(&w.token),
                Some(&body),
                &[("idempotency-key", &key), ("x-request-id", &request_id)],
            )
            .await;
            let ended = Instant::now();
            let mut a = Attempt {
                client: i,
                kind,
                key: key.clone(),
                request_id,
                base,
                status: None,
                retry_after: None,
                content_type: String::new(),
                error: None,
                text: String::new(),
                started,
                ended,
            };
            match r {
                Ok(reply) => {
                    a.status = Some(reply.status);
                    a.retry_after = reply.retry_after.clone();
                    a.content_type = reply.content_type.clone();
                    if reply.status >= 300 {
                        a.text = reply.text.chars().take(400).collect();
                    }
                    let acked = (200..300).contains(&reply.status);
                    if acked {
                        let id = reply.body["id"].as_i64().unwrap_or_else(|| {
                            panic!("2xx without an id: {}", reply.text);
                        });
                        out.acks.push(Ack {
                            kind,
                            key: key.clone(),
                            id,
                        });
                    }
                    attempts.lock().expect("attempts").push(a);
                    if acked || reply.status < 500 {
                        // acknowledged, or refused for a reason a retry cannot change
                        break;
                    }
                }
                Err(e) => {
                    a.error = Some(format!("{e:?}").chars().take(300).collect());
                    attempts.lock().expect("attempts").push(a);
                }
            }
            // only failures (5xx, transport errors) get here: pause before going on
            if !cfg.retry_until_acked {
                tokio::time::sleep(Duration::from_millis(100)).await;
                break;
            }
            if stop.load(Ordering::SeqCst) {
                let since = *stop_seen.get_or_insert_with(Instant::now);
                if since.elapsed() > cfg.finish_within {
                    out.gave_up.push(key);
                    break 'writes;
                }
            }
            try_no += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n += 1;
    }
    out
}

/// "201 x 812, 503 x 40, transport error x 3": for messages.
pub fn histogram(attempts: &[Attempt]) -> String {
    let mut h: BTreeMap<String, usize> = BTreeMap::new();
    for a in attempts {
        let k = match a.status {
            Some(s) => s.to_string(),
            None => "transport error".into(),
        };
        *h.entry(k).or_default() += 1;
    }
    h.iter()
        .map(|(k, v)| format!("{k} x {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "server 0: 120 requests, p50 12 ms, p99 80 ms; server 1: ...": for messages.
pub fn latencies(attempts: &[Attempt]) -> String {
    let mut by_base: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    for a in attempts {
        by_base.entry(a.base).or_default().push(a.ended - a.started);
    }
    by_base
        .into_iter()
        .map(|(base, mut d)| {
            d.sort();
            let at = |q: f64| d[((d.len() - 1) as f64 * q) as usize].as_millis();
            format!(
                "server {base}: {} requests, p50 {} ms, p99 {} ms, max {} ms",
                d.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}
