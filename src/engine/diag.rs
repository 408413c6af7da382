//! Diagnostic kinds, always registered, for operators' smoke tests and for benchmarks.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Lane, Outcome, Registry};

fn num(payload: &Value, key: &str) -> u64 {
    payload.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub(super) fn register(r: &mut Registry) {
    r.register("diag.noop", Lane::Analytics, |_ctx| async { Outcome::Done(Value::Null) });

    r.register("diag.sleep", Lane::Analytics, |ctx| async move {
        let ms = num(&ctx.payload, "ms");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Outcome::Done(json!({"slept_ms": ms})),
            _ = ctx.stopped() => {
                let why = ctx.stop_reason().map(|r| r.as_str()).unwrap_or("stopped");
                Outcome::retry(format!("diag.sleep interrupted: {why}"))
            }
        }
    });

    r.register("diag.fail", Lane::Analytics, |ctx| async move {
        if ctx.payload.get("permanent").and_then(Value::as_bool).unwrap_or(false) {
            return Outcome::fail("diag.fail: permanent failure on purpose");
        }
        let times = num(&ctx.payload, "times");
        if u64::from(ctx.attempt) <= times {
            Outcome::retry(format!("diag.fail: failing attempt {} of {times} on purpose", ctx.attempt))
        } else {
            Outcome::Done(json!({"succeeded_on_attempt": ctx.attempt}))
        }
    });

    r.register("diag.panic", Lane::Analytics, |_ctx| async {
        panic!("diag.panic: panicking on purpose");
    });

    r.register("diag.progress", Lane::Analytics, |ctx| async move {
        let steps = num(&ctx.payload, "steps").clamp(1, 10_000);
        let ms = num(&ctx.payload, "ms");
        for step in 1..=steps {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = ctx.stopped() => return Outcome::retry("diag.progress interrupted"),
            }
            ctx.progress((step * 100 / steps) as u8).await;
        }
        Outcome::Done(json!({"steps": steps}))
    });
}
