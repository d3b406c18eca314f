//! Request ids, structured logs, Prometheus metrics and security headers: one middleware.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

/// The id of the request being served; echoed in `X-Request-Id` and on every log line.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Request counts and latencies by route, method and status.
#[derive(Default)]
pub struct Metrics {
    /// keyed by route pattern (or `unmatched`), method label and status: all from fixed sets
    series: Mutex<BTreeMap<(String, &'static str, u16), Series>>,
}

impl Metrics {
    fn observe(&self, route: String, method: &'static str, status: u16, secs: f64) {
        let Ok(mut map) = self.series.lock() else {
            return;
        };
        let s = map.entry((route, method, status)).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self, pool: &crate::db::Pool) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let state = pool.state();
        let _ = writeln!(
            out,
            "# HELP casebook_db_pool_connections Open database connections."
        );
        let _ = writeln!(out, "# TYPE casebook_db_pool_connections gauge");
        let _ = writeln!(out, "casebook_db_pool_connections {}", state.connections);
        let _ = writeln!(
            out,
            "# HELP casebook_db_pool_idle Idle database connections."
        );
        let _ = writeln!(out, "# TYPE casebook_db_pool_idle gauge");
        let _ = writeln!(out, "casebook_db_pool_idle {}", state.idle_connections);
        let Ok(map) = self.series.lock() else {
            return out;
        };
        let _ = writeln!(
            out,
            "# HELP casebook_http_requests_total HTTP requests served."
        );
        let _ = writeln!(out, "# TYPE casebook_http_requests_total counter");
        for ((route, method, status), s) in map.iter() {
            let _ = writeln!(
                out,
                "casebook_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {}",
                s.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP casebook_http_request_duration_seconds Request latency."
        );
        let _ = writeln!(
            out,
            "# TYPE casebook_http_request_duration_seconds histogram"
        );
        for ((route, method, status), s) in map.iter() {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "casebook_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "casebook_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "casebook_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "casebook_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out
    }
}

/// The method as a metrics label: the standard methods by name, any other token (a client may
/// send any) as `other`, so that clients cannot add label sets, which are kept forever.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

fn acceptable_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Tags the request with an id, logs it, times it, and sets the security headers.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().to_string();
    let method_label = method_label(req.method());
    let path = req.path().to_owned();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    span.in_scope(|| tracing::info!(status, latency_ms = secs * 1000.0, "served"));
    if let Some(m) = metrics {
        m.observe(route, method_label, status, secs);
    }
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        headers.insert(HeaderName::from_static("x-request-id"), v);
    }
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // Swagger UI's scripts are all files of ours; its React code sets inline styles.
    let csp = if path.starts_with("/docs") {
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(csp),
    );
    if path.starts_with("/api/") {
        headers.insert(
            actix_web::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    Ok(res)
}

/// Logs to stderr, as JSON when stderr is not a terminal, as text otherwise. `RUST_LOG` filters.
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        let _ = builder.try_init();
    } else {
        let _ = builder.json().with_current_span(true).try_init();
    }
}
