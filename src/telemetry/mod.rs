//! Metrics and logs: the Prometheus recorder and the metrics' handles ([`recorder`], used by
//! every layer) and tracing. Below every layer: it knows no Redis (the engine samples the lanes
//! into gauges: `engine::gauges`).

pub(crate) mod recorder;

pub use recorder::{Handles, prometheus};

/// Log to stderr; `RUST_LOG` chooses what (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
