//! Switchyard: customer-conversation webhooks onto Redis Streams, and the workers that answer.
//!
//! The data path, in the order a message travels:
//! - [`ingest`] verifies and parses platform webhooks into events and queues them, deduplicated;
//! - [`engine`] is the task engine: lanes as streams with consumer groups, the producer, the
//!   worker runtime (read, run, record in batches), retries by `XCLAIM`, the dead-letter queue;
//! - [`conversation`] records conversations and answers customers, and [`delivery`] sends the
//!   replies back through the platforms (error classification, text limits, rate limits);
//! - [`analytics`] computes conversation figures and performance reports, and cleans up;
//! - [`schedule`] fires periodic work exactly once per tick across processes;
//! - [`web`] serves the JSON API, the webhooks' routes, the dashboard, health and metrics.
//!
//! Beneath them: [`model`] (the vocabulary every layer shares), [`redis`] (key names, Lua
//! scripts, connections, the private `redis-server`), [`config`] (settings, validated once),
//! [`telemetry`] (the Prometheus recorder, tracing). Above them: [`app`] (wiring roles
//! together and shutting them down), [`commands`] (the CLI's operations) and [`bench`].
//! ARCHITECTURE.md draws the layers; imports only run down them.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod analytics;
pub mod app;
pub mod bench;
pub mod commands;
pub mod config;
pub mod conversation;
pub mod delivery;
pub mod engine;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod http_client;
pub mod ingest;
pub mod model;
pub mod redis;
pub mod schedule;
pub mod telemetry;
pub mod web;
