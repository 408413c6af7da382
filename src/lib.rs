//! Switchyard: customer-conversation webhooks onto Redis Streams, and the workers that answer.
//!
//! The data path, in the order a message travels:
//! - [`ingest`] verifies and parses platform webhooks and appends them to a lane, deduplicated;
//! - [`engine`] is the task engine: lanes as streams with consumer groups, the producer, the
//!   worker runtime (read, run, record in batches), retries by `XCLAIM`, the dead-letter queue;
//! - [`conversation`] holds the responders that answer customers, and [`delivery`] what sending
//!   a reply back through a platform involves (error classification, text limits);
//! - [`analytics`] computes conversation figures and performance reports, and cleans up;
//! - [`schedule`] fires periodic work exactly once per tick across processes;
//! - [`web`] serves the JSON API, health and metrics;
//! - [`telemetry`] holds metric names, the Prometheus recorder and the lane sampler.
//!
//! Around it: [`config`] (settings, validated once), [`redis`] (key names, Lua scripts,
//! connections, the private `redis-server`), [`app`] (wiring roles together and shutting them
//! down), [`commands`] (the CLI's operations) and [`bench`].
#![forbid(unsafe_code)]

pub mod analytics;
pub mod app;
pub mod bench;
pub mod commands;
pub mod config;
pub mod conversation;
pub mod delivery;
pub mod engine;
pub mod http_client;
pub mod ingest;
pub mod redis;
pub mod schedule;
pub mod telemetry;
pub mod web;
