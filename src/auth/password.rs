//! argon2id password hashing and the password policy.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::PasswordSettings;
use crate::domain::FieldError;

/// Stored hashes asking for more than this are refused unread: a tampered hash must not
/// make the server compute a gigabyte-sized argon2.
const MAX_M_COST_KIB: u32 = 262_144;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 8;

pub const MIN_LEN: usize = 15;
pub const MAX_LEN: usize = 128;

/// A short list of passwords people choose; long enough ones included.
const COMMON: &[&str] = &[
    "passwordpassword",
    "password1234567",
    "password12345678",
    "123456789012345",
    "1234567890123456",
    "qwertyuiopasdfgh",
    "qwertyuiopasdfghjkl",
    "iloveyouiloveyou",
    "letmeinletmein1",
    "administrator123",
    "welcome12345678",
    "changemechangeme",
    "casebookcasebook",
    "anakinraanakinra",
    "correcthorsebatterystaple",
    "aaaaaaaaaaaaaaa",
    "abcdefghijklmnop",
    "trustno1trustno1",
];

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    dummy_hash: String,
}

pub enum Verdict {
    Match { needs_rehash: bool },
    NoMatch,
}

impl Hasher {
    pub fn new(s: &PasswordSettings) -> Result<Self, String> {
        // Hashes made with more than the verifier accepts would lock every account out:
        // each login would rehash its password to parameters the next login refuses.
        for (key, value, most) in [
            ("m_cost_kib", s.m_cost_kib, MAX_M_COST_KIB),
            ("t_cost", s.t_cost, MAX_T_COST),
            ("p_cost", s.p_cost, MAX_P_COST),
        ] {
            if value > most {
                return Err(format!(
                    "password.{key}: at most {most} (stored hashes above it are refused)"
                ));
            }
        }
        let params = Params::new(s.m_cost_kib, s.t_cost, s.p_cost, None)
            .map_err(|e| format!("password: invalid argon2 parameters: {e}"))?;
        let mut me = Self {
            params,
            dummy_hash: String::new(),
        };
        // Unknown e-mails are verified against this, so they take as long as known ones.
        me.dummy_hash = me.hash("casebook dummy password for timing")?;
        Ok(me)
    }

    fn argon(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    pub fn hash(&self, password: &str) -> Result<String, String> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        self.argon()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no user.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> Verdict {
        let Some(stored) = stored else {
            let _ = self.check(password, &self.dummy_hash);
            return Verdict::NoMatch;
        };
        self.check(password, stored)
    }

    fn check(&self, password: &str, stored: &str) -> Verdict {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return Verdict::NoMatch;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return Verdict::NoMatch;
        };
        if params.m_cost() > MAX_M_COST_KIB
            || params.t_cost() > MAX_T_COST
            || params.p_cost() > MAX_P_COST
            || parsed.algorithm.as_str() != "argon2id"
        {
            tracing::error!("stored password hash has out-of-bounds parameters; refused");
            return Verdict::NoMatch;
        }
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        if !ok {
            return Verdict::NoMatch;
        }
        let needs_rehash = params.m_cost() != self.params.m_cost()
            || params.t_cost() != self.params.t_cost()
            || params.p_cost() != self.params.p_cost();
        Verdict::Match { needs_rehash }
    }
}

/// The policy: 15 to 128 characters, not the e-mail, not a common password. No composition
/// rules (NIST SP 800-63B).
pub fn check_policy(field: &str, password: &str, email: &str) -> Result<(), FieldError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at least {MIN_LEN} characters"),
        ));
    }
    if len > MAX_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_LEN} characters"),
        ));
    }
    let lower = password.to_lowercase();
    let email_lower = email.to_lowercase();
    let local = email_lower.split('@').next().unwrap_or_default();
    if lower == email_lower || (!local.is_empty() && lower == local) {
        return Err(FieldError::new(field, "must not be your e-mail address"));
    }
    if COMMON.contains(&lower.as_str()) {
        return Err(FieldError::new(field, "is too common; choose another"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bounds() {
        assert!(check_policy("p", &"a".repeat(14), "x@y.z").is_err());
        assert!(check_policy("p", "fifteen chars!!", "x@y.z").is_ok());
        assert!(check_policy("p", &"é".repeat(128), "x@y.z").is_ok());
        assert!(check_policy("p", &"b".repeat(129), "x@y.z").is_err());
        assert!(check_policy("p", "someone.long@site.org", "Someone.Long@site.org").is_err());
        assert!(check_policy("p", "PasswordPassword", "x@y.z").is_err());
    }

    #[test]
    fn parameters_the_verifier_would_refuse_stop_the_server() {
        let costly = PasswordSettings {
            m_cost_kib: 1024,
            t_cost: MAX_T_COST + 1,
            p_cost: 1,
            hashing_threads: None,
        };
        let Err(message) = Hasher::new(&costly) else {
            panic!("t_cost above the verifier's bound was accepted")
        };
        assert!(message.contains("password.t_cost"), "{message}");
    }

    #[test]
    fn hash_verify_and_rehash() {
        let cheap = PasswordSettings {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
            hashing_threads: None,
        };
        let h = Hasher::new(&cheap).map_err(|e| e.to_string());
        let Ok(h) = h else { panic!("hasher") };
        let Ok(stored) = h.hash("a long passphrase here") else {
            panic!("hash")
        };
        assert!(matches!(
            h.verify("a long passphrase here", Some(&stored)),
            Verdict::Match {
                needs_rehash: false
            }
        ));
        assert!(matches!(
            h.verify("a long passphrase her", Some(&stored)),
            Verdict::NoMatch
        ));
        let stronger = PasswordSettings {
            m_cost_kib: 2048,
            t_cost: 1,
            p_cost: 1,
            hashing_threads: None,
        };
        let Ok(h2) = Hasher::new(&stronger) else {
            panic!("hasher")
        };
        assert!(matches!(
            h2.verify("a long passphrase here", Some(&stored)),
            Verdict::Match { needs_rehash: true }
        ));
        let huge = stored.replace("m=1024", "m=4194304");
        assert!(matches!(
            h.verify("a long passphrase here", Some(&huge)),
            Verdict::NoMatch
        ));
    }
}
