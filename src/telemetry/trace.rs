//! Traces: OpenTelemetry spans exported over OTLP/HTTP, set up by the standard variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, …). The spans are `tracing` spans: a request, the
//! enqueue, each attempt of a task, the LLM call, the send to a platform. A task's trace context
//! travels in its stream entry as a W3C `traceparent`, so its attempts — on any worker, in any
//! process — are children of the enqueue that queued it.
//!
//! Off (no endpoint set), nothing is exported, no `traceparent` is written, and the spans only
//! traces need are at `debug` level, which the log filter turns away before they are made.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ON: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported by this process.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Whether the standard variables ask for traces: an OTLP endpoint is set, and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns them off.
fn wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value));
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// The exporter and the tracer provider, when the variables ask for traces; `Err` says why
/// they could not be set up (the process then runs without them).
pub(super) fn provider() -> Result<Option<SdkTracerProvider>, String> {
    if !wanted() {
        return Ok(None);
    }
    match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref().map(str::trim) {
        Err(_) | Ok("" | "http/protobuf") => {}
        Ok(other) => return Err(format!("OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use http/protobuf")),
    }
    // The exporter's HTTPS client uses the process's TLS provider, as the outbound client does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("the OTLP exporter could not be built: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("switchyard");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            resource.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build(),
        )
        .build();
    ON.store(true, Ordering::Relaxed);
    Ok(Some(provider))
}

/// The layer that turns this crate's spans (and its warnings and errors, as span events) into
/// OpenTelemetry spans.
pub(super) fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("switchyard"))
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target().starts_with("switchyard") && (m.is_span() || *m.level() <= tracing::Level::WARN)
        }))
}

/// The W3C `traceparent` of the current span, when traces are on and it is sampled.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace id a W3C `traceparent` names (32 lowercase hex digits), when it is well formed.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let ok = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(span, 16)
        && span.bytes().any(|b| b != b'0')
        && hex(flags, 2);
    ok.then_some(trace)
}

/// Make `span` a child of the remote span a `traceparent` names (a header, a task's entry) and
/// record the trace id in its `trace_id` field, for the logs. Without traces, only the field.
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    let named = traceparent.and_then(trace_id_of);
    if enabled() {
        if let Some(tp) = traceparent.filter(|_| named.is_some()) {
            let carrier = HashMap::from([("traceparent".to_string(), tp.trim().to_string())]);
            let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
        }
        let id = span.context().span().span_context().trace_id();
        if id != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(id));
            return;
        }
    }
    if let Some(id) = named {
        span.record("trace_id", id);
    }
}

/// Name a span for its trace (`otel.name`; its `tracing` name stays, for the logs) and say what
/// kind it is (`otel.kind`: `server`, `client`, `producer`, `consumer`). Nothing without traces.
/// Before [`adopt`] or anything else that reads the span's context: the span starts then, and
/// its name and kind are fixed.
pub fn name(span: &tracing::Span, name: impl FnOnce() -> String, kind: &'static str) {
    if enabled() && !span.is_disabled() {
        span.record("otel.name", name());
        span.record("otel.kind", kind);
    }
}

/// Mark a span failed, with why (`otel.status_description`: an error status, described).
pub fn failed(span: &tracing::Span, why: &str) {
    if enabled() && !span.is_disabled() {
        span.record("otel.status_description", why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_names_its_trace_only_when_well_formed() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id_of(&format!(" {tp} ")), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }
}
