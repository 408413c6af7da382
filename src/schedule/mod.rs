//! Periodic work, fired exactly once per tick across every process.
