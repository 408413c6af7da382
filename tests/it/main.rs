//! Integration tests against a real Redis: one binary, one key prefix per test, run in parallel.
//!
//! `common` starts the shared `redis-server` (or uses `SWITCHYARD_TEST_REDIS_URL`) and holds the
//! helpers; `engine` covers the task engine and its API; `webhooks` the ingestion endpoints,
//! `webhook_ids` what names an event (empty, blank and over-long ids, unreadable items);
//! `delivery` replies going out to a local stand-in for the platforms; `conversations` the
//! conversation store; `faults` races and Redis faults; `cluster` Redis Cluster; `failover` a cluster changing under load (a master killed, a slot moved); `pause` pausing a lane; `ordering` tasks run in order per key; `flow` a webhook in, its reply out; `schedule` the scheduler; `binary` the `switchyard`
//! command itself; `openapi` the OpenAPI document against a real validator and the router.

mod analytics;
mod analytics_conv;
mod auth;
mod binary;
mod browser;
mod cluster;
mod common;
mod conversations;
mod dashboard;
mod delivery;
mod deploy;
mod engine;
mod events;
mod failover;
mod faults;
mod flow;
mod front;
mod history;
mod later;
mod link;
mod memory;
mod metrics;
mod openapi;
mod ordering;
mod pause;
mod schedule;
mod traces;
mod webhook_ids;
mod webhooks;
