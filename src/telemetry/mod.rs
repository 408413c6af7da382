//! Metrics and logs: the Prometheus recorder and the metrics' handles ([`recorder`], used by
//! every layer) and tracing. Below every layer: it knows no Redis (the engine samples the lanes
//! into gauges: `engine::gauges`).

pub(crate) mod recorder;

pub use recorder::{Handles, prometheus};

use crate::config::LogFormat;

/// Log to stderr, one event per line; `RUST_LOG` chooses what (default `info`). `Text` is for
/// people, coloured only on a terminal; `Json` is one object per line for log shippers, with
/// the fields of the spans the event happened in (a task's id, kind, lane and attempt; a
/// request's method and path) alongside its own.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
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
}
