//! What a client of the API does: log in, enrol a consented subject, post clinical data.

use std::time::Duration;

use serde_json::{json, Value};

use super::server::DEMO_PASSWORD;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .expect("client")
}

/// A demo investigator of `site` (FR01..FR04).
pub fn investigator(site: &str) -> String {
    format!("investigator.{}@casebook.test", site.to_ascii_lowercase())
}

pub async fn login(client: &reqwest::Client, base: &str, email: &str) -> String {
    let r = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": DEMO_PASSWORD}))
        .send()
        .await
        .expect("login request");
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "login of {email} failed: {body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

pub fn new_subject(site: &str) -> Value {
    json!({"site_code": site, "sex": "female", "birth_year_month": "2023-04", "weight_kg": 20.0,
           "eligibility": {"INC-KD": true, "INC-IVIG": true, "INC-WINDOW": true, "INC-CONSENT": true,
                           "EXC-INFECTION": false, "EXC-ANAKINRA": false}})
}

pub fn consent() -> Value {
    json!({"form_version": "2.0", "signed_on": "2026-10-01", "signer": "legal_representative",
           "representative_relationship": "mother", "assent": false})
}

/// A temperature measured `n` minutes after 2 October 2026 (after the consent, in the past).
pub fn temperature(n: u64) -> Value {
    let at = chrono::DateTime::parse_from_rfc3339("2026-10-02T00:00:00Z").expect("date")
        + chrono::Duration::minutes(i64::try_from(n % 60_000).unwrap_or(0));
    let celsius = 36.0 + f64::from(u32::try_from(n % 40).unwrap_or(0)) / 10.0;
    json!({"measured_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
           "celsius": celsius, "method": "rectal"})
}

pub fn mild_event() -> Value {
    json!({"term": "Injection-site pain, thigh", "onset_date": "2026-10-06", "grade": 1,
           "serious": false, "relationship": "probable", "action_taken": "none",
           "outcome": "recovering", "awareness_date": "2026-10-06"})
}

pub fn serious_event() -> Value {
    json!({"term": "Bacterial pneumonia", "meddra_code": "10060946", "meddra_term": "Pneumonia bacterial",
           "onset_date": "2026-10", "grade": 3, "serious": true, "seriousness_criteria": ["hospitalisation"],
           "relationship": "possible", "action_taken": "interrupted", "outcome": "recovering",
           "awareness_date": "2026-10-08"})
}

/// A whole response: status, Retry-After, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: String,
    pub text: String,
    pub body: Value,
}

pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    key: Option<&str>,
) -> Result<Reply, reqwest::Error> {
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    send_with(client, method, url, token, body, &headers).await
}

pub async fn send_with(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Result<Reply, reqwest::Error> {
    let mut rb = client.request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await?;
    let status = r.status().as_u16();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after");
    let content_type = header("content-type").unwrap_or_default();
    let text = r.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        retry_after,
        content_type,
        text,
        body,
    })
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> Reply {
    send(
        client,
        reqwest::Method::POST,
        url,
        Some(token),
        Some(body),
        key,
    )
    .await
    .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Enrols a subject at `site` and records its consent; returns the subject code.
pub async fn enrolled(client: &reqwest::Client, base: &str, token: &str, site: &str) -> String {
    let r = post(
        client,
        &format!("{base}/api/v1/subjects"),
        token,
        &new_subject(site),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "enrol: {}", r.text);
    let code = r.body["subject_code"]
        .as_str()
        .expect("subject_code")
        .to_owned();
    add_consent(client, base, token, &code).await;
    code
}

pub async fn add_consent(client: &reqwest::Client, base: &str, token: &str, code: &str) {
    let r = post(
        client,
        &format!("{base}/api/v1/subjects/{code}/consents"),
        token,
        &consent(),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "consent: {}", r.text);
}
