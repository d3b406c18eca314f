//! The protocol file: what is dosed, measured and checked. Loaded and validated at start;
//! an error names the key.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CriterionKind {
    Inclusion,
    Exclusion,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub id: String,
    pub kind: CriterionKind,
    pub text: String,
}

/// "From day N, if a temperature above the fever threshold was measured on day N before
/// the dose, the dose becomes X mg/kg."
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub from_day: i32,
    pub mg_per_kg: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DoseRule {
    /// The same dose every day.
    Fixed { mg: f64 },
    /// A dose by body weight, optionally escalated on fever.
    PerKg {
        mg_per_kg: f64,
        #[serde(default)]
        escalation: Option<Escalation>,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StudyInfo {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub fever_threshold_celsius: f64,
    pub max_treatment_days: i32,
    /// A dose further than this from the expected one is a protocol deviation.
    pub dose_tolerance_percent: f64,
    /// Day of illness on which treatment may start, when the protocol has a window.
    #[serde(default)]
    pub treatment_start_window_days: Option<[i32; 2]>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtocolFile {
    pub study: StudyInfo,
    pub consent_versions: Vec<String>,
    pub eligibility: Vec<Criterion>,
    pub dose: DoseRule,
    pub limits: Limits,
    pub temperature_methods: Vec<String>,
    pub injection_sites: Vec<String>,
}

/// The running protocol and the SHA-256 of its file (exports carry both).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Protocol {
    #[serde(flatten)]
    pub file: ProtocolFile,
    pub file_hash: String,
}

impl Protocol {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("CASEBOOK_PROTOCOL: cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("protocol file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ProtocolFile = toml::from_str(text).map_err(|e| {
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })?;
        validate(&file)?;
        let file_hash = hex::encode(Sha256::digest(text.as_bytes()));
        Ok(Self { file, file_hash })
    }

    pub fn fever_threshold(&self) -> f64 {
        self.file.limits.fever_threshold_celsius
    }

    pub fn criterion(&self, id: &str) -> Option<&Criterion> {
        self.file.eligibility.iter().find(|c| c.id == id)
    }
}

fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

fn validate(f: &ProtocolFile) -> Result<(), String> {
    if f.study.id.trim().is_empty() {
        return Err("study.id: must not be empty".into());
    }
    if f.consent_versions.is_empty() {
        return Err("consent_versions: at least one version must be in force".into());
    }
    let mut seen = std::collections::HashSet::new();
    for c in &f.eligibility {
        if c.id.trim().is_empty() || !seen.insert(c.id.as_str()) {
            return Err(format!(
                "eligibility.id: `{}` is empty or repeated",
                c.id.escape_debug()
            ));
        }
    }
    match &f.dose {
        DoseRule::Fixed { mg } if !positive(*mg) => {
            return Err("dose.mg: must be positive".into());
        }
        DoseRule::PerKg {
            mg_per_kg,
            escalation,
        } => {
            if !positive(*mg_per_kg) {
                return Err("dose.mg_per_kg: must be positive".into());
            }
            if let Some(e) = escalation {
                if e.from_day < 1 || !positive(e.mg_per_kg) {
                    return Err("dose.escalation: from_day >= 1 and a positive mg_per_kg".into());
                }
            }
        }
        _ => {}
    }
    let l = &f.limits;
    if !(30.0..=45.0).contains(&l.fever_threshold_celsius) {
        return Err("limits.fever_threshold_celsius: must be within 30.0-45.0".into());
    }
    if l.max_treatment_days < 1 {
        return Err("limits.max_treatment_days: must be at least 1".into());
    }
    if !(0.0..=100.0).contains(&l.dose_tolerance_percent) {
        return Err("limits.dose_tolerance_percent: must be within 0-100".into());
    }
    if let Some([a, b]) = l.treatment_start_window_days {
        if a < 0 || b < a {
            return Err(
                "limits.treatment_start_window_days: [first, last] with first <= last".into(),
            );
        }
    }
    if f.temperature_methods.is_empty() {
        return Err("temperature_methods: at least one method".into());
    }
    if f.injection_sites.is_empty() {
        return Err("injection_sites: at least one site".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/protocols")
            .join(name);
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn both_shipped_protocols_load() {
        for name in ["kawasaki.toml", "thera.toml"] {
            let p = Protocol::parse(&read(name));
            assert!(p.is_ok(), "{name}: {:?}", p.err());
        }
    }

    #[test]
    fn a_broken_file_names_the_key() {
        let text =
            read("kawasaki.toml").replace("max_treatment_days = 15", "max_treatment_days = 0");
        let err = Protocol::parse(&text).err().unwrap_or_default();
        assert!(err.contains("limits.max_treatment_days"), "{err}");
        let text = read("kawasaki.toml").replace("fever_threshold_celsius", "fever_threshold");
        let err = Protocol::parse(&text).err().unwrap_or_default();
        assert!(err.contains("fever_threshold"), "{err}");
    }
}
