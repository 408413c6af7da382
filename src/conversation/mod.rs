//! Conversations: who said what ([`store`]), and what we answer ([`responder`]).

pub mod responder;
pub mod store;
