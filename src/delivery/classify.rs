//! What to do after a platform answered a send: done, try again (when), or give up.
//!
//! Meta's rules (SPEC §5): HTTP 5xx, 429 and error codes 1, 2, 4, 17, 32, 613 and 1200 are
//! transient — retry, honouring `Retry-After`; codes 190, 200, 230, 551, 100 and 368 and subcode
//! 2018278 are permanent — straight to the DLQ with the platform's error. Any other 4xx is the
//! request's fault and permanent too.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    Sent,
    Retry { after: Option<Duration>, reason: String },
    Permanent(String),
}

const RETRY_CODES: [i64; 7] = [1, 2, 4, 17, 32, 613, 1200];
const PERMANENT_CODES: [i64; 6] = [190, 200, 230, 551, 100, 368];
const PERMANENT_SUBCODES: [i64; 1] = [2018278];

/// `Retry-After` as seconds or an HTTP date; only the seconds form is read (Meta sends it).
pub(super) fn retry_after(header: Option<&str>) -> Option<Duration> {
    header?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Classify a Graph API answer.
pub(super) fn meta(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Sent;
    }
    let after = retry_after(retry_after_header);
    let err: Value =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("error").cloned()).unwrap_or(Value::Null);
    let code = err.get("code").and_then(Value::as_i64);
    let subcode = err.get("error_subcode").and_then(Value::as_i64);
    let message = err.get("message").and_then(Value::as_str).unwrap_or("");
    let reason = match (code, subcode) {
        (Some(c), Some(s)) => format!("HTTP {status}, Meta error {c}/{s}: {message}"),
        (Some(c), None) => format!("HTTP {status}, Meta error {c}: {message}"),
        _ => format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])),
    };
    if subcode.is_some_and(|s| PERMANENT_SUBCODES.contains(&s)) || code.is_some_and(|c| PERMANENT_CODES.contains(&c)) {
        return Verdict::Permanent(reason);
    }
    if code.is_some_and(|c| RETRY_CODES.contains(&c)) || status == 429 || status >= 500 {
        return Verdict::Retry { after, reason };
    }
    Verdict::Permanent(reason)
}

/// Classify any other platform's answer by HTTP status alone (RBM, WhatsApp transport errors).
pub(super) fn http(status: u16, retry_after_header: Option<&str>, body: &[u8]) -> Verdict {
    match status {
        200..=299 => Verdict::Sent,
        429 | 500..=599 => Verdict::Retry {
            after: retry_after(retry_after_header),
            reason: format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])),
        },
        _ => Verdict::Permanent(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i64, sub: Option<i64>) -> Vec<u8> {
        let mut e =
            serde_json::json!({"error": {"message": "m", "type": "OAuthException", "code": code, "fbtrace_id": "x"}});
        if let Some(s) = sub {
            e["error"]["error_subcode"] = s.into();
        }
        e.to_string().into_bytes()
    }

    #[test]
    fn success_and_transient_errors() {
        assert_eq!(meta(200, None, b"{}"), Verdict::Sent);
        assert!(matches!(meta(500, None, b"oops"), Verdict::Retry { after: None, .. }));
        assert!(
            matches!(meta(429, Some("7"), b""), Verdict::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        for code in RETRY_CODES {
            assert!(matches!(meta(400, None, &body(code, None)), Verdict::Retry { .. }), "code {code}");
        }
        assert!(
            matches!(meta(400, Some("30"), &body(613, None)), Verdict::Retry { after: Some(d), .. } if d.as_secs() == 30)
        );
    }

    #[test]
    fn permanent_errors_name_the_platform_error() {
        for code in PERMANENT_CODES {
            match meta(400, None, &body(code, None)) {
                Verdict::Permanent(r) => assert!(r.contains(&format!("Meta error {code}")), "{r}"),
                v => panic!("code {code}: {v:?}"),
            }
        }
        // A transient code with the permanent subcode is permanent.
        assert!(matches!(meta(400, None, &body(2, Some(2018278))), Verdict::Permanent(_)));
        assert!(matches!(meta(404, None, b"not json"), Verdict::Permanent(_)));
    }

    #[test]
    fn other_platforms_by_status() {
        assert_eq!(http(204, None, b""), Verdict::Sent);
        assert!(matches!(http(503, Some("2"), b""), Verdict::Retry { after: Some(_), .. }));
        assert!(matches!(http(403, None, b"denied"), Verdict::Permanent(_)));
    }
}
