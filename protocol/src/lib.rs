//! PostgreSQL wire format as the pooler needs it: framing, startup packets, the few message views
//! the relay inspects, builders for what pgmux originates, and md5 / SCRAM-SHA-256 primitives.
//! No sockets, no Tokio, no policy: everything here works on byte slices and can be fuzzed.
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::all)]

pub mod backend;
pub mod build;
pub mod error;
pub mod extended;
pub mod flow;
pub mod frame;
pub mod frontend;
pub mod md5;
pub mod reader;
pub mod scram;
pub mod sqlstate;
pub mod startup;
pub mod tags;

pub use error::ProtocolError;
pub use frame::{split_frame, Frame};
