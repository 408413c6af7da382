//! Analytics on the `analytics` lane: per-conversation figures ([`conversation`], worked out by
//! `figures`) and the deployment's performance reports ([`report`]), plus the maintenance cleanup
//! ([`cleanup`]). What they keep in Redis, and read of the engine's keys, is in `store`.

pub(crate) mod cleanup;
pub mod conversation;
pub(crate) mod figures;
pub(crate) mod report;
mod store;
