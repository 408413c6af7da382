//! Signature checks. Every comparison is constant-time (`Mac::verify_slice`), and secrets are
//! never logged.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha512};

/// `sha256=<lowercase hex>` of HMAC-SHA256(secret, body), as Meta and generic sources send it.
pub fn sha256_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Check a `sha256=<hex>` header against the raw body. `Err` says what was wrong, for the 401.
pub fn check_sha256(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), &'static str> {
    let header = header.ok_or("missing signature header")?;
    let hex_sig = header.trim().strip_prefix("sha256=").ok_or("signature must start with sha256=")?;
    let mut sig = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut sig).map_err(|_| "signature is not 64 hex digits")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| "signature does not match the body")
}

/// base64(HMAC-SHA512(client token, data)), as RBM signs the decoded `message.data`.
pub fn rbm_signature(client_token: &[u8], data: &[u8]) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(client_token).expect("HMAC takes keys of any length");
    mac.update(data);
    STANDARD.encode(mac.finalize().into_bytes())
}

pub fn check_rbm(client_token: &[u8], data: &[u8], header: Option<&str>) -> Result<(), &'static str> {
    let header = header.ok_or("missing X-Goog-Signature header")?;
    let sig = STANDARD.decode(header.trim()).map_err(|_| "X-Goog-Signature is not base64")?;
    let mut mac = Hmac::<Sha512>::new_from_slice(client_token).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.verify_slice(&sig).map_err(|_| "X-Goog-Signature does not match the message data")
}

/// Constant-time equality of two secrets (verify tokens, client tokens).
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FB_BODY: &str = r#"{"object":"page","entry":[{"id":"PAGE_ID","time":1458692752478,"messaging":[{"sender":{"id":"PSID"},"recipient":{"id":"PAGE_ID"},"timestamp":1457764197627,"message":{"mid":"m_abc","text":"hello, world!"}}]}]}"#;
    const FB_SIG: &str = "sha256=b3639008cd82bb8d3203f5941eabd29086f08fed27ad36e48d6aa7ac4f47fb48";

    #[test]
    fn facebook_public_vector() {
        assert_eq!(sha256_signature(b"test_app_secret", FB_BODY.as_bytes()), FB_SIG);
        assert!(check_sha256(b"test_app_secret", FB_BODY.as_bytes(), Some(FB_SIG)).is_ok());
    }

    #[test]
    fn facebook_forged_missing_and_malformed() {
        let body = FB_BODY.as_bytes();
        assert!(check_sha256(b"other_secret", body, Some(FB_SIG)).is_err());
        assert!(check_sha256(b"test_app_secret", b"{}", Some(FB_SIG)).is_err());
        assert_eq!(check_sha256(b"test_app_secret", body, None), Err("missing signature header"));
        assert!(check_sha256(b"test_app_secret", body, Some("sha1=abc")).is_err());
        assert!(check_sha256(b"test_app_secret", body, Some("sha256=zz")).is_err());
    }

    #[test]
    fn rbm_public_vector() {
        let data = r#"{"senderPhoneNumber":"+12223334444","messageId":"msg-1","sendTime":"2026-01-01T00:00:00Z","agentId":"bot@rbm.goog","text":"Hi"}"#;
        let sig = "ni4gpCzhW8VbXSD6mSIbH5jN0n/T6v+lhq3VomcFRFz8jauzpBEU1N6Q2OzAS7dZ0R1guSQ55ONltCB8c6aVyA==";
        assert_eq!(rbm_signature(b"SJENCPGJESMGUFPY", data.as_bytes()), sig);
        assert!(check_rbm(b"SJENCPGJESMGUFPY", data.as_bytes(), Some(sig)).is_ok());
        assert!(check_rbm(b"WRONGTOKEN", data.as_bytes(), Some(sig)).is_err());
    }
}
