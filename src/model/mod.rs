//! The vocabulary every layer shares, with no behaviour that reaches Redis or the network: lanes,
//! tasks and their states ([`task`]), the platforms and the events they send ([`event`]), and a
//! customer's message to answer with the conversation it belongs to ([`message`]).

pub mod event;
pub(crate) mod message;
pub(crate) mod task;

pub use event::{EventKind, InboundEvent, Platform, Raw};
pub use message::{Channel, ConversationKey, Incoming};
pub use task::{Lane, TaskSpec, TaskState};
