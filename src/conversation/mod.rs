//! Conversations: who said what, and what we answer. [`responder`] holds the built-in rules.

pub mod responder;
