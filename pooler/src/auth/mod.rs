//! Who may log in and how, beyond the auth_file: secrets looked up in PostgreSQL with
//! auth_query (`query`). The HBA and ident files are read with the configuration
//! (config/hba.rs, config/ident.rs) and used from here and from client/auth.rs.

pub mod query;

pub use crate::config::hba::{ConnKind, Hba};
pub use crate::config::ident::IdentMap;
