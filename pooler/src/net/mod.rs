//! Sockets: the stream type shared by clients and servers, and the listeners.

pub mod listener;
pub mod stream;

pub use stream::{PeerAddr, Stream};
