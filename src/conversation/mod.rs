//! Conversations: who said what ([`store`]), what we answer ([`responder`], [`llm`]), the
//! tasks that take a message to its reply ([`flow`]), and the events that need no answer
//! recorded in theirs ([`events`]).

pub(crate) mod events;
pub(crate) mod flow;
mod llm;
pub mod responder;
pub mod store;
