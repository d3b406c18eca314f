//! Layered settings: `config/default.toml`, then `config/{env}.toml`, then the environment.
//!
//! Environment names: `DATABASE_URL`, `CASEBOOK_LISTEN`, `CASEBOOK_ENV`,
//! `CASEBOOK_JWT_SECRET`, `CASEBOOK_PROTOCOL`, `CASEBOOK_STUDY`, `CASEBOOK_SAE_WEBHOOK_URL`,
//! `CASEBOOK_SAE_WEBHOOK_SECRET`, and
//! `CASEBOOK__SECTION__KEY` for any other key. `CASEBOOK_CONFIG_DIR` says where the files are.
//! Everything is checked here, before the port is bound; an error names the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A setting that is missing or wrong; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        match s {
            "development" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" => Ok(Self::Production),
            other => Err(ConfigError(format!(
                "CASEBOOK_ENV: `{other}` is not one of development, test, production"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub pool_max_size: u32,
    pub pool_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub app_role: String,
    /// most requests one batched entry statement serves (src/db/async_batch.rs)
    pub batch_max_size: usize,
    /// batched one-statement entries of engine forms running at a time, each
    pub batch_write_leaders: usize,
    /// microseconds a one-statement entry leader waits for its batch to fill (0: never)
    pub batch_gather_us: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    pub secret: String,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// Threads that hash passwords, at the lowest CPU priority; default: one core fewer
    /// than the machine has (at least 1), so one core always stays free of hashing.
    #[serde(default)]
    pub hashing_threads: Option<usize>,
}

impl PasswordSettings {
    pub fn hashing_threads(&self) -> usize {
        self.hashing_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    pub seal_interval_ms: u64,
}

/// Serious adverse event alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaeSettings {
    /// Where alerts are POSTed; empty: alerts wait, visible as pending.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for the X-Casebook-Signature header.
    pub webhook_secret: String,
    pub poll_interval_ms: u64,
    pub max_attempts: i32,
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    pub timeout_ms: u64,
    pub batch: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub env: Environment,
    pub listen: SocketAddr,
    pub protocol: PathBuf,
    /// The study definition the server runs (config/studies/*.toml); checked at start.
    pub study: PathBuf,
    pub shutdown_timeout_secs: u64,
    pub body_limit_bytes: usize,
    pub client_request_timeout_ms: u64,
    /// how long a request body may take to arrive, once its head has
    pub body_timeout_ms: u64,
    pub database: DatabaseSettings,
    pub jwt: JwtSettings,
    pub password: PasswordSettings,
    pub audit: AuditSettings,
    pub sae: SaeSettings,
}

const DEV_SECRET: &str = "dev-only-secret-change-me-0123456789abcdef";

impl Settings {
    /// Reads the files and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let dir = vars
            .iter()
            .find(|(k, _)| k == "CASEBOOK_CONFIG_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| PathBuf::from("config"));
        Self::load_from(&dir, &vars)
    }

    /// Reads `dir` and the given environment (tests pass their own).
    pub fn load_from(dir: &Path, vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut value = read_toml(&dir.join("default.toml"))?;
        let env_name = vars
            .iter()
            .find(|(k, _)| k == "CASEBOOK_ENV")
            .map(|(_, v)| v.clone())
            .or_else(|| value.get("env").and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "development".into());
        let env = Environment::parse(&env_name)?;
        let layer = dir.join(format!("{}.toml", env.name()));
        if layer.exists() {
            merge(&mut value, read_toml(&layer)?);
        }
        set(&mut value, &["env"], toml::Value::String(env_name));
        for (key, val) in vars {
            let path: Vec<String> = match key.as_str() {
                "DATABASE_URL" => vec!["database".into(), "url".into()],
                "CASEBOOK_LISTEN" => vec!["listen".into()],
                "CASEBOOK_JWT_SECRET" => vec!["jwt".into(), "secret".into()],
                "CASEBOOK_PROTOCOL" => vec!["protocol".into()],
                "CASEBOOK_STUDY" => vec!["study".into()],
                "CASEBOOK_SAE_WEBHOOK_URL" => vec!["sae".into(), "webhook_url".into()],
                "CASEBOOK_SAE_WEBHOOK_SECRET" => vec!["sae".into(), "webhook_secret".into()],
                k if k.starts_with("CASEBOOK__") => k["CASEBOOK__".len()..]
                    .split("__")
                    .map(|p| p.to_ascii_lowercase())
                    .collect(),
                _ => continue,
            };
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            let typed = if key.starts_with("CASEBOOK__") {
                guess_type(val)
            } else {
                toml::Value::String(val.clone())
            };
            set(&mut value, &parts, typed);
        }
        let settings: Settings = value.try_into().map_err(|e: toml::de::Error| {
            ConfigError(format!("configuration: {}", one_line(&e)))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt.secret.len() < 32 {
            return Err(ConfigError(
                "CASEBOOK_JWT_SECRET: must be at least 32 bytes".into(),
            ));
        }
        if self.env == Environment::Production && self.jwt.secret == DEV_SECRET {
            return Err(ConfigError(
                "CASEBOOK_JWT_SECRET: the development secret is refused in production; set your own".into(),
            ));
        }
        if !(self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return Err(ConfigError(
                "DATABASE_URL: must start with postgres:// or postgresql://".into(),
            ));
        }
        if self.database.pool_max_size < 2 {
            // one connection held while another is awaited deadlocks at size 1
            return Err(ConfigError(
                "database.pool_max_size: must be at least 2".into(),
            ));
        }
        let db = &self.database;
        if db.batch_max_size == 0 || db.batch_write_leaders == 0 {
            return Err(ConfigError(
                "database.batch_max_size, batch_write_leaders: must be at least 1".into(),
            ));
        }
        if db.batch_gather_us > 100_000 {
            // a window that long would be a delay on every entry, not a gathering
            return Err(ConfigError(
                "database.batch_gather_us: must be at most 100000 (0.1 s)".into(),
            ));
        }
        if self.body_timeout_ms == 0 {
            return Err(ConfigError("body_timeout_ms: must be at least 1".into()));
        }
        if self.password.hashing_threads == Some(0) {
            return Err(ConfigError(
                "password.hashing_threads: must be at least 1".into(),
            ));
        }
        if self.env == Environment::Production
            && (self.password.m_cost_kib < 19456 || self.password.t_cost < 2)
        {
            return Err(ConfigError(
                "password: production needs at least m_cost_kib=19456 and t_cost=2".into(),
            ));
        }
        if let Some(url) = self.sae.webhook_url.as_deref().filter(|u| !u.is_empty()) {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError(
                    "CASEBOOK_SAE_WEBHOOK_URL: must be an http:// or https:// URL".into(),
                ));
            }
            if self.sae.webhook_secret.len() < 16 {
                return Err(ConfigError(
                    "CASEBOOK_SAE_WEBHOOK_SECRET: at least 16 bytes when a webhook is set".into(),
                ));
            }
        }
        if self.sae.max_attempts < 1 {
            return Err(ConfigError("sae.max_attempts: at least 1".into()));
        }
        if self.jwt.access_ttl_secs <= 0 || self.jwt.refresh_ttl_secs <= 0 {
            return Err(ConfigError("jwt: token lifetimes must be positive".into()));
        }
        if !self
            .database
            .app_role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError(
                "database.app_role: letters, digits and _ only".into(),
            ));
        }
        Ok(())
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_toml(path: &Path) -> Result<toml::Value, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
    text.parse::<toml::Value>()
        .map_err(|e| ConfigError(format!("{}: {}", path.display(), one_line(&e))))
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn set(value: &mut toml::Value, path: &[&str], new: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = value;
    for p in parents {
        let toml::Value::Table(t) = cur else { return };
        cur = t
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    if let toml::Value::Table(t) = cur {
        t.insert((*last).to_owned(), new);
    }
}

/// Environment values are strings; numbers and booleans are recognised so that
/// `CASEBOOK__DATABASE__POOL_MAX_SIZE=4` works.
fn guess_type(s: &str) -> toml::Value {
    if let Ok(i) = s.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match s {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_load() {
        let s = Settings::load_from(&dir(), &[]).expect("defaults are valid");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.env, Environment::Development);
    }

    #[test]
    fn environment_overrides_files() {
        let s = Settings::load_from(
            &dir(),
            &vars(&[
                ("CASEBOOK_LISTEN", "0.0.0.0:9000"),
                ("CASEBOOK__DATABASE__POOL_MAX_SIZE", "4"),
                ("CASEBOOK_ENV", "test"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.database.pool_max_size, 4);
        assert_eq!(s.password.m_cost_kib, 1024);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Settings::load_from(&dir(), &vars(&[("CASEBOOK_LISTEN", "nowhere")]))
            .expect_err("invalid listen");
        assert!(err.0.contains("listen"), "{}", err.0);
        let err = Settings::load_from(&dir(), &vars(&[("CASEBOOK_ENV", "prod")]))
            .expect_err("invalid env");
        assert!(err.0.contains("CASEBOOK_ENV"), "{}", err.0);
        let err = Settings::load_from(&dir(), &vars(&[("CASEBOOK_JWT_SECRET", "short")]))
            .expect_err("short secret");
        assert!(err.0.contains("CASEBOOK_JWT_SECRET"), "{}", err.0);
        let err = Settings::load_from(&dir(), &vars(&[("CASEBOOK_ENV", "production")]))
            .expect_err("dev secret in production");
        assert!(err.0.contains("CASEBOOK_JWT_SECRET"), "{}", err.0);
        let err = Settings::load_from(
            &dir(),
            &vars(&[("CASEBOOK__DATABASE__BATCH_GATHER_US", "250000")]),
        )
        .expect_err("a gather window of a quarter second");
        assert!(err.0.contains("database.batch_gather_us"), "{}", err.0);
    }
}
