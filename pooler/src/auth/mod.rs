//! Who may log in and how, beyond the auth_file: the HBA file that picks a method per
//! connection (`hba`), the ident maps that tie OS users and certificate names to database users
//! (`ident`), and secrets looked up in PostgreSQL with auth_query (`query`).

pub mod hba;
pub mod ident;
pub mod query;

pub use hba::{ConnKind, Hba};
pub use ident::IdentMap;
