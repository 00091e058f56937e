//! TLS on both sides with rustls (ring provider): the acceptor clients meet
//! (`client_tls_*`), the connector pgmux uses towards PostgreSQL (`server_tls_*`), and what a
//! handshake tells the login (the client certificate's name, channel-binding data). Everything
//! here is built when the configuration loads, so RELOAD picks up new certificates and a bad
//! file fails the load with its name and reason.

mod accept;
mod connect;
mod pem;
mod settings;

pub use accept::{AcceptedTls, ClientTls};
pub use connect::ServerTls;
pub use settings::SslMode;
