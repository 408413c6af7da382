//! Analytics on the `analytics` lane: per-conversation figures ([`conversation`]) and the
//! deployment's performance reports ([`report`]), plus the maintenance cleanup ([`cleanup`]).

pub mod cleanup;
pub mod conversation;
pub mod report;
