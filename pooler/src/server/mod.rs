//! Server connections: where they go, how they log in, and the connection object a pool holds.

mod conn;
mod login;
mod rescue;
mod statements;
mod target;

pub use conn::{is_reported, ServerConn, ServerParams};
pub use login::{connect, run_lookup, run_simple_query, Credentials, Opening, ServerError};
pub use rescue::{recover, Abandoned};
pub use statements::ServerStatements;
pub use target::Target;
