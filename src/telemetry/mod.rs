//! Metrics and logs: the Prometheus recorder and the metrics' handles ([`recorder`], used by
//! every layer) and tracing. Below every layer: it knows no Redis (the engine samples the lanes
//! into gauges: `engine::gauges`).

pub(crate) mod recorder;
pub mod trace;

pub use recorder::{Handles, prometheus};

use crate::config::LogFormat;

/// Log to stderr, one event per line; `RUST_LOG` chooses what (default `info`). `Text` is for
/// people, coloured only on a terminal; `Json` is one object per line for log shippers, with
/// the fields of the spans the event happened in (a task's id, kind, lane, attempt and trace id;
/// a request's method, path and trace id) alongside its own. With an OTLP endpoint set, the
/// spans are exported as traces too ([`trace`]); the guard sends the last of them when dropped.
pub fn init_tracing(format: LogFormat) -> TraceGuard {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let (provider, trouble) = match trace::provider() {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let registry = tracing_subscriber::registry();
    let _ = match &provider {
        // The log filter is the logs' own: the spans only traces need pass to the exporter.
        Some(p) => registry.with(trace::layer(p)).with(fmt_layer(format).with_filter(filter)).try_init(),
        None => registry.with(filter).with(fmt_layer(format)).try_init(),
    };
    if let Some(e) = trouble {
        tracing::warn!("traces are off: {e}");
    }
    // A panic (a handler's is caught and fails its attempt) is a log event like any other: one
    // line, in the format chosen, naming the task or request it happened in.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(panic = %message, %location, "panicked");
    }));
    TraceGuard(provider)
}

/// The log lines, in the format chosen.
fn fmt_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed(),
    }
}

/// Holds the trace exporter: dropping it sends the spans still buffered (at most a few seconds'
/// wait for the collector).
pub struct TraceGuard(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown_with_timeout(std::time::Duration::from_secs(5));
        }
    }
}
