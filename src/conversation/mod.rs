//! Conversations: who said what ([`store`]), what we answer ([`responder`], [`llm`]), the
//! tasks that take a message to its reply ([`flow`]), and the events that need no answer
//! recorded in theirs ([`events`]).

pub mod events;
pub mod flow;
pub mod llm;
pub mod responder;
pub mod store;
