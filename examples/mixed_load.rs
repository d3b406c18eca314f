//! Mixed-workload load test (issue 9) against a running server seeded with `seed-demo`:
//! `CLIENTS` clients (default 64) for `SECONDS` (default 60), each request drawn at random:
//! 80% reads (40% a casebook, 20% a site's subject list, 20% a subject's temperatures),
//! 15% data entry (POST a temperature), 5% small exports (one site's temperatures.csv for
//! one day). Prints throughput, p50/p99/max per kind (successful requests), errors (any
//! other non-2xx or transport error) and 429s (refused: the export slots, a quarter of the
//! pool, were all busy; no retry) apart, and the server's memory at start and end when
//! `SERVER_PID` is set. Exits 1 on any error or 429.
//!
//! Setup (through the API, before the clock starts): `SUBJECTS` subjects per site (default
//! 5) at FR01-FR04, each with a consent and 10 temperatures.
//!
//! Run: `BASE=http://127.0.0.1:18192 SERVER_PID=<pid> cargo run --release --example mixed_load`
//! (`bench/mixed.sh` creates the scratch database and the server, runs this, cleans up).

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const PASSWORD: &str = "demo password for casebook";
const SITES: [&str; 4] = ["FR01", "FR02", "FR03", "FR04"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Casebook,
    List,
    Temperatures,
    Entry,
    Export,
}

const KINDS: [Kind; 5] = [
    Kind::Casebook,
    Kind::List,
    Kind::Temperatures,
    Kind::Entry,
    Kind::Export,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Casebook => "read: casebook",
            Self::List => "read: subject list",
            Self::Temperatures => "read: temperatures",
            Self::Entry => "entry: POST temperature",
            Self::Export => "export: site CSV, 1 day",
        }
    }
    fn pick(r: u32) -> Self {
        match r {
            0..=39 => Self::Casebook,
            40..=59 => Self::List,
            60..=79 => Self::Temperatures,
            80..=94 => Self::Entry,
            _ => Self::Export,
        }
    }
}

struct World {
    base: String,
    client: reqwest::Client,
    /// investigator token per site (index as SITES)
    investigators: Vec<String>,
    sponsor: String,
    /// (site index, subject code)
    subjects: Vec<(usize, String)>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn login(client: &reqwest::Client, base: &str, email: &str) -> Res<String> {
    let r = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(format!("login {email}: {}", r.status()).into());
    }
    let v: Value = r.json().await?;
    Ok(v["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_owned())
}

async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> Res<Value> {
    let r = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        return Err(format!("POST {url}: {status} {text}").into());
    }
    Ok(serde_json::from_str(&text)?)
}

fn temperature(rng: &mut impl Rng) -> Value {
    // 2026-10-02 .. 2026-11-20, any minute: after the consent, never in the future
    let minute = rng.gen_range(0..50 * 24 * 60);
    let at = chrono::DateTime::parse_from_rfc3339("2026-10-02T00:00:00Z")
        .map(|t| t + chrono::Duration::minutes(minute))
        .map(|t| t.to_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "2026-10-05T08:00:00Z".into());
    let celsius = f64::from(rng.gen_range(360..=405)) / 10.0;
    let method = ["axillary", "rectal", "tympanic", "oral"][rng.gen_range(0..4)];
    json!({"measured_at": at, "celsius": celsius, "method": method})
}

async fn setup(base: &str, per_site: usize) -> Res<World> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?;
    let mut investigators = Vec::new();
    for site in SITES {
        let email = format!("investigator.{}@casebook.test", site.to_ascii_lowercase());
        investigators.push(login(&client, base, &email).await?);
    }
    let sponsor = login(&client, base, "sponsor@casebook.test").await?;
    let mut subjects = Vec::new();
    let mut rng = rand::thread_rng();
    for (i, site) in SITES.iter().enumerate() {
        let token = &investigators[i];
        for _ in 0..per_site {
            let s = post(
                &client,
                format!("{base}/api/v1/subjects"),
                token,
                json!({"site_code": site, "sex": "female", "birth_year_month": "2023-04",
                       "weight_kg": 20.0,
                       "eligibility": {"INC-KD": true, "INC-IVIG": true, "INC-WINDOW": true,
                           "INC-CONSENT": true, "EXC-INFECTION": false, "EXC-ANAKINRA": false}}),
            )
            .await?;
            let code = s["subject_code"]
                .as_str()
                .ok_or("no subject_code")?
                .to_owned();
            post(
                &client,
                format!("{base}/api/v1/subjects/{code}/consents"),
                token,
                json!({"form_version": "2.0", "signed_on": "2026-10-01",
                       "signer": "legal_representative", "representative_relationship": "mother"}),
            )
            .await?;
            for _ in 0..10 {
                post(
                    &client,
                    format!("{base}/api/v1/subjects/{code}/temperatures"),
                    token,
                    temperature(&mut rng),
                )
                .await?;
            }
            subjects.push((i, code));
        }
    }
    Ok(World {
        base: base.to_owned(),
        client,
        investigators,
        sponsor,
        subjects,
    })
}

/// Why a request did not succeed.
enum Failure {
    /// 429: refused by design (back-pressure), counted apart
    Refused,
    Error(String),
}

/// One request of `kind`: Ok(()) for a 2xx with its whole body read.
async fn one(w: &World, kind: Kind, rng: &mut rand::rngs::StdRng) -> Result<(), Failure> {
    let (site, code) = &w.subjects[rng.gen_range(0..w.subjects.len())];
    let token = &w.investigators[*site];
    let base = &w.base;
    let req = match kind {
        Kind::Casebook => w
            .client
            .get(format!("{base}/api/v1/subjects/{code}/casebook"))
            .bearer_auth(token),
        Kind::List => w
            .client
            .get(format!("{base}/api/v1/subjects?site={}", SITES[*site]))
            .bearer_auth(token),
        Kind::Temperatures => w
            .client
            .get(format!("{base}/api/v1/subjects/{code}/temperatures"))
            .bearer_auth(token),
        Kind::Entry => w
            .client
            .post(format!("{base}/api/v1/subjects/{code}/temperatures"))
            .bearer_auth(token)
            .json(&temperature(rng)),
        Kind::Export => {
            let day = format!("2026-10-{:02}", rng.gen_range(2..=31));
            w.client
                .get(format!(
                    "{base}/api/v1/exports/temperatures.csv?site={}&from={day}&to={day}",
                    SITES[*site]
                ))
                .bearer_auth(&w.sponsor)
        }
    };
    let resp = req
        .send()
        .await
        .map_err(|e| Failure::Error(format!("transport: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Failure::Error(format!("body: {e}")))?;
    if status.is_success() {
        Ok(())
    } else if status.as_u16() == 429 {
        Err(Failure::Refused)
    } else {
        Err(Failure::Error(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        )))
    }
}

#[derive(Default)]
struct Tally {
    /// latencies in microseconds, per kind (index as KINDS)
    micros: [Vec<u32>; 5],
    errors: [u64; 5],
    refused: [u64; 5],
    samples: Vec<String>,
}

fn memory(pid: Option<u32>) -> String {
    let Some(pid) = pid else {
        return "n/a (set SERVER_PID)".into();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| format!("{:.1} MiB", kib / 1024.0))
            .unwrap_or_else(|| "?".into())
    };
    format!("VmRSS {}, VmHWM {}", field("VmRSS:"), field("VmHWM:"))
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Res<()> {
    let base = std::env::var("BASE").unwrap_or_else(|_| "http://127.0.0.1:18192".into());
    let clients: usize = env_or("CLIENTS", 64);
    let seconds: u64 = env_or("SECONDS", 60);
    let per_site: usize = env_or("SUBJECTS", 5);
    let pid: Option<u32> = std::env::var("SERVER_PID")
        .ok()
        .and_then(|v| v.parse().ok());

    let world = Arc::new(setup(&base, per_site).await?);
    println!(
        "setup: {} subjects with consent and 10 temperatures each",
        world.subjects.len()
    );
    println!("server memory at start: {}", memory(pid));
    println!("load average at start: {}", loadavg());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let w = world.clone();
        tasks.push(tokio::spawn(async move {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let mut t = Tally::default();
            while Instant::now() < deadline {
                let kind = Kind::pick(rng.gen_range(0..100));
                let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
                let t0 = Instant::now();
                let r = one(&w, kind, &mut rng).await;
                let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                match r {
                    Ok(()) => t.micros[k].push(us),
                    Err(Failure::Refused) => t.refused[k] += 1,
                    Err(Failure::Error(e)) => {
                        t.errors[k] += 1;
                        if t.samples.len() < 3 {
                            t.samples.push(format!("{}: {e}", kind.name()));
                        }
                    }
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await?;
        for k in 0..KINDS.len() {
            all.micros[k].extend_from_slice(&t.micros[k]);
            all.errors[k] += t.errors[k];
            all.refused[k] += t.refused[k];
        }
        for s in t.samples {
            if all.samples.len() < 10 {
                all.samples.push(s);
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("load average at end: {}", loadavg());
    println!("server memory at end: {}", memory(pid));
    let total: usize = all.micros.iter().map(Vec::len).sum();
    let errors: u64 = all.errors.iter().sum();
    let refused: u64 = all.refused.iter().sum();
    println!(
        "{clients} clients, {elapsed:.1} s: {total} ok requests, {:.0} req/s, {errors} errors, \
         {refused} refused (429)",
        total as f64 / elapsed
    );
    println!(
        "| kind | ok | req/s | p50 ms | p99 ms | max ms | errors | 429 |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut reads: Vec<u32> = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        let mut v = all.micros[k].clone();
        v.sort_unstable();
        if matches!(kind, Kind::Casebook | Kind::List | Kind::Temperatures) {
            reads.extend_from_slice(&v);
        }
        println!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
            kind.name(),
            v.len(),
            v.len() as f64 / elapsed,
            pct(&v, 0.50),
            pct(&v, 0.99),
            pct(&v, 1.0),
            all.errors[k],
            all.refused[k]
        );
    }
    reads.sort_unstable();
    println!(
        "| all reads | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} |",
        reads.len(),
        reads.len() as f64 / elapsed,
        pct(&reads, 0.50),
        pct(&reads, 0.99),
        pct(&reads, 1.0),
        all.errors[..3].iter().sum::<u64>(),
        all.refused[..3].iter().sum::<u64>()
    );
    for s in &all.samples {
        println!("error sample: {s}");
    }
    if errors + refused > 0 {
        std::process::exit(1);
    }
    Ok(())
}
