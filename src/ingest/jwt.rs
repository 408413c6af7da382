//! Pub/Sub push authentication: an OIDC JWT signed by Google (RS256), checked against a JWKS
//! read from a file or a URL, cached, and fetched again when a token names an unknown key.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// How long a fetched key set is trusted before it is fetched again.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// Unknown key ids cause a refresh at most this often, so forged tokens cannot hammer the source.
const MIN_REFRESH: Duration = Duration::from_secs(2);
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
const LEEWAY_S: u64 = 60;

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    iat: Option<u64>,
}

pub struct Jwks {
    source: String,
    http: reqwest::Client,
    cache: Mutex<Option<(JwkSet, Instant)>>,
    last_fetch: Mutex<Option<Instant>>,
}

impl Jwks {
    pub fn new(source: &str, http: reqwest::Client) -> Jwks {
        Jwks { source: source.to_string(), http, cache: Mutex::new(None), last_fetch: Mutex::new(None) }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let text = if self.source.starts_with("http://") || self.source.starts_with("https://") {
            let resp = self
                .http
                .get(&self.source)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_err(|e| format!("JWKS fetch: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("JWKS fetch: HTTP {}", resp.status()));
            }
            resp.text().await.map_err(|e| format!("JWKS fetch: {e}"))?
        } else {
            std::fs::read_to_string(&self.source).map_err(|e| format!("JWKS file {}: {e}", self.source))?
        };
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("JWKS is not a key set: {e}"))?;
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((set.clone(), Instant::now()));
        Ok(set)
    }

    fn cached_key(&self, kid: &str) -> Option<Result<DecodingKey, String>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (set, at) = cache.as_ref()?;
        if at.elapsed() > CACHE_FOR {
            return None;
        }
        set.find(kid).map(|jwk| DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key {kid}: {e}")))
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        if let Some(k) = self.cached_key(kid) {
            return k;
        }
        // Fetch at most every MIN_REFRESH, whatever the tokens say: forged kids or a broken key
        // source must not turn every push into a fetch.
        if self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t.elapsed() < MIN_REFRESH) {
            return Err(format!("unknown signing key {kid}"));
        }
        let set = self.fetch().await?;
        let jwk = set.find(kid).ok_or_else(|| format!("unknown signing key {kid}"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key {kid}: {e}"))
    }

    /// Check a push request's bearer token. `Err` says why, for the log and the 401.
    pub async fn verify(&self, token: &str, audience: &str, service_account: &str) -> Result<(), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("token algorithm {:?} is not RS256", header.alg));
        }
        let kid = header.kid.ok_or("token names no key (kid)")?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[audience]);
        v.set_issuer(&ISSUERS);
        v.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
        v.leeway = LEEWAY_S;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| format!("token rejected: {e}"))?;
        let c = data.claims;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        match c.iat {
            None => return Err("token has no iat".into()),
            Some(iat) if iat > now + LEEWAY_S => return Err("token issued in the future".into()),
            Some(_) => {}
        }
        if c.email.as_deref() != Some(service_account) {
            return Err("token is not from the configured service account".into());
        }
        let verified = match c.email_verified {
            Some(serde_json::Value::Bool(b)) => b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        if !verified {
            return Err("token's email is not verified".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const AUD: &str = "https://switchyard.example/webhooks/google/pubsub";
    const SA: &str = "push@project.iam.gserviceaccount.com";

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn token(key: &[u8], kid: &str, claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        encode(&h, &claims, &EncodingKey::from_rsa_der(key)).unwrap()
    }

    fn good_claims() -> serde_json::Value {
        json!({"iss": "https://accounts.google.com", "aud": AUD, "email": SA, "email_verified": true, "iat": now(), "exp": now() + 3600})
    }

    fn jwks() -> Jwks {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwks.json");
        Jwks::new(path, crate::http_client::client().unwrap())
    }

    const KEY_A: &[u8] = include_bytes!("../../tests/fixtures/jwt_a.der");
    const KEY_B: &[u8] = include_bytes!("../../tests/fixtures/jwt_b.der");

    #[tokio::test]
    async fn a_google_token_passes() {
        let t = token(KEY_A, "test-key-a", good_claims());
        jwks().verify(&t, AUD, SA).await.unwrap();
        let mut c = good_claims();
        c["iss"] = json!("accounts.google.com");
        c["email_verified"] = json!("true");
        jwks().verify(&token(KEY_A, "test-key-a", c), AUD, SA).await.unwrap();
    }

    #[tokio::test]
    async fn unknown_key_wrong_audience_expired_and_impostors_fail() {
        let j = jwks();
        let err = j.verify(&token(KEY_B, "test-key-b", good_claims()), AUD, SA).await.unwrap_err();
        assert!(err.contains("unknown signing key"), "{err}");
        // A token signed by another key under a known kid.
        assert!(j.verify(&token(KEY_B, "test-key-a", good_claims()), AUD, SA).await.is_err());
        let mut c = good_claims();
        c["aud"] = json!("https://elsewhere.example");
        assert!(j.verify(&token(KEY_A, "test-key-a", c), AUD, SA).await.unwrap_err().contains("rejected"));
        let mut c = good_claims();
        c["exp"] = json!(now() - 120);
        c["iat"] = json!(now() - 4000);
        assert!(j.verify(&token(KEY_A, "test-key-a", c), AUD, SA).await.is_err(), "expired beyond the leeway");
        let mut c = good_claims();
        c["exp"] = json!(now() - 30);
        j.verify(&token(KEY_A, "test-key-a", c), AUD, SA).await.expect("expired within the 60 s leeway");
        let mut c = good_claims();
        c["iat"] = json!(now() + 600);
        assert!(j.verify(&token(KEY_A, "test-key-a", c), AUD, SA).await.is_err(), "issued in the future");
        let mut c = good_claims();
        c["email"] = json!("someone@else.example");
        assert!(j.verify(&token(KEY_A, "test-key-a", c), AUD, SA).await.is_err());
        let mut c = good_claims();
        c["email_verified"] = json!(false);
        assert!(j.verify(&token(KEY_A, "test-key-a", c), AUD, SA).await.is_err());
        let mut c = good_claims();
        c["iss"] = json!("https://evil.example");
        assert!(j.verify(&token(KEY_A, "test-key-a", c), AUD, SA).await.is_err());
        let hs = encode(&Header::new(Algorithm::HS256), &good_claims(), &EncodingKey::from_secret(b"k")).unwrap();
        assert!(j.verify(&hs, AUD, SA).await.unwrap_err().contains("RS256"));
        assert!(j.verify("not.a.jwt", AUD, SA).await.is_err());
    }
}
