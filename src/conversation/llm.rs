//! Replies from any OpenAI-compatible chat-completions endpoint (`LLM_URL`), with the
//! conversation's history as context. Bounded by `LLM_TIMEOUT`; any failure is an error the
//! caller answers with the built-in responder instead.

use std::sync::OnceLock;

use serde_json::{Value, json};
use tracing::Instrument;

use super::store::{StoredTurn, Who};
use crate::config::Config;
use crate::telemetry::trace;

const SYSTEM_PROMPT: &str = "You are the customer-service assistant of a business, answering customers on \
Messenger, Instagram, WhatsApp and RCS. Answer briefly and politely, in the customer's language. \
Help with prices, shipping and order status; if the customer asks for a person or complains, say \
a member of the team will follow up.";

/// Longest reply asked for, in tokens.
const MAX_TOKENS: u32 = 300;

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| crate::http_client::client().expect("the HTTP client builds with static settings"))
}

/// The endpoint to POST to: `LLM_URL` as given when it names `/chat/completions`, else that
/// path under it (so both `https://host/v1` and the full URL work).
pub(super) fn endpoint(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/chat/completions") { base.to_string() } else { format!("{base}/chat/completions") }
}

/// The request body: system prompt, the history (customer → user, ours → assistant; system
/// turns such as reads are left out) and the new message.
pub(super) fn request_body(model: &str, history: &[StoredTurn], message: &str) -> Value {
    let mut messages = vec![json!({"role": "system", "content": SYSTEM_PROMPT})];
    for t in history {
        let role = match t.who {
            Who::Customer => "user",
            Who::Agent => "assistant",
            Who::System => continue,
        };
        messages.push(json!({"role": role, "content": t.text}));
    }
    messages.push(json!({"role": "user", "content": message}));
    json!({"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0.3})
}

/// Ask the endpoint for a reply. `Err` says why there is none (timeout, status, shape).
pub(super) async fn reply(c: &Config, history: &[StoredTurn], message: &str) -> Result<String, String> {
    // With traces on, the call is a client span of the attempt, and its context goes with it.
    let span = tracing::debug_span!(
        "llm",
        model = %c.llm_model,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    trace::name(&span, || format!("chat {}", c.llm_model), "client");
    let answer = ask(c, history, message).instrument(span.clone()).await;
    if let Err(e) = &answer {
        trace::failed(&span, e);
    }
    answer
}

async fn ask(c: &Config, history: &[StoredTurn], message: &str) -> Result<String, String> {
    let Some(base) = c.llm_url.as_deref() else { return Err("LLM_URL is not set".into()) };
    let mut req =
        http().post(endpoint(base)).timeout(c.llm_timeout).json(&request_body(&c.llm_model, history, message));
    if let Some(key) = c.llm_api_key.as_deref() {
        req = req.bearer_auth(key);
    }
    if let Some(tp) = trace::current_traceparent() {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer within {}", humantime::format_duration(c.llm_timeout))
        } else {
            format!("request failed: {}", e.without_url())
        }
    })?;
    let status = resp.status();
    let body: Value =
        resp.json().await.map_err(|e| format!("unreadable answer (HTTP {status}): {}", e.without_url()))?;
    if !status.is_success() {
        let msg = body["error"]["message"].as_str().unwrap_or("no message");
        return Err(format!("HTTP {status}: {msg}"));
    }
    let text = body["choices"][0]["message"]["content"].as_str().map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err("the answer held no message content".into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_accepts_a_base_or_the_full_url() {
        assert_eq!(endpoint("http://h/v1"), "http://h/v1/chat/completions");
        assert_eq!(endpoint("http://h/v1/"), "http://h/v1/chat/completions");
        assert_eq!(endpoint("http://h/v1/chat/completions"), "http://h/v1/chat/completions");
    }

    #[test]
    fn history_becomes_user_and_assistant_messages() {
        let t = |who, text: &str| StoredTurn {
            who,
            text: text.into(),
            kind: "message".into(),
            intent: None,
            event_id: None,
            at_ms: 0,
        };
        let body =
            request_body("m", &[t(Who::Customer, "hi"), t(Who::System, "read"), t(Who::Agent, "hello!")], "price?");
        let roles: Vec<&str> =
            body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(body["messages"][3]["content"], "price?");
        assert_eq!(body["model"], "m");
    }
}
