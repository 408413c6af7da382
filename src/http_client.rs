//! The one outbound HTTP client (key sets, platform send APIs, LLM endpoints): rustls with the
//! system's roots, small timeouts, connection reuse.

use std::time::Duration;

/// Longest an outbound request may take, from connecting to the end of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    // The TLS crypto provider is chosen once per process; a second install is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
}
