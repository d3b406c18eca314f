//! Access tokens (JWT, HS256 pinned) and refresh tokens (opaque, stored hashed).

use base64::Engine;
use chrono::Utc;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::JwtSettings;

/// The JOSE `typ` of access tokens (RFC 9068), checked on decode: jsonwebtoken does not.
const ACCESS_TYP: &str = "at+jwt";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// The user's token version when issued; bumped on role, site, password or activity changes.
    pub ver: i32,
    /// The session (refresh-token family) this token belongs to.
    pub sid: Uuid,
}

#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
}

impl Tokens {
    pub fn new(s: &JwtSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&s.issuer]);
        validation.set_audience(&[&s.audience]);
        validation.leeway = s.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        Self {
            encoding: EncodingKey::from_secret(s.secret.as_bytes()),
            decoding: DecodingKey::from_secret(s.secret.as_bytes()),
            validation,
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            access_ttl_secs: s.access_ttl_secs,
            refresh_ttl_secs: s.refresh_ttl_secs,
        }
    }

    pub fn issue_access(
        &self,
        user_id: i64,
        token_version: i32,
        session: Uuid,
    ) -> Result<String, String> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            exp: now + self.access_ttl_secs,
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            ver: token_version,
            sid: session,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TYP.into());
        encode(&header, &claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// Decodes and checks an access token; `None` for anything not fully valid.
    pub fn decode_access(&self, token: &str) -> Option<Claims> {
        if token.len() > 4096 {
            return None;
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        if data.header.typ.as_deref() != Some(ACCESS_TYP) {
            return None;
        }
        Some(data.claims)
    }
}

/// A new refresh token: 256 random bits, base64url. Only its hash is stored.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
