//! Conversations: who said what ([`store`]), what we answer ([`responder`], [`llm`]), and the
//! tasks that take a message to its reply ([`flow`]).

pub mod flow;
pub mod llm;
pub mod responder;
pub mod store;
