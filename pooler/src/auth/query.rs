//! auth_query: a user missing from auth_file (or listed there with an empty password) is looked
//! up in PostgreSQL, over a pooled connection of auth_user to auth_dbname (or the client's
//! database), with the user name sent as a Bind parameter. As in PgBouncer the query runs at every
//! such login (no cache), so a changed password, `VALID UNTIL` or auth_query is seen at once.
//! No row means the user does not exist; a NULL secret (an expired role under the default query)
//! means it exists with a password that never matches.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, DatabaseConfig, StoredSecret};
use crate::shared::Shared;

/// Why a lookup gave no answer. What the client is told follows PgBouncer: configuration
/// problems and query errors are `bouncer config error` (the reason goes to the log), a disabled
/// auth database is named, and a server that refuses the auth_user login passes its own error on.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// auth_dbname names no database, or the admin console.
    #[error("{0}")]
    Config(String),
    /// The auth database is disabled (console DISABLE).
    #[error("authentication database \"{0}\" is disabled")]
    Disabled(String),
    /// The query failed or returned the wrong shape.
    #[error("{0}")]
    Failed(String),
    /// The server refused auth_user's login: its SQLSTATE and message, passed to the client.
    #[error("{1}")]
    Server(String, String),
    /// No answer within the time allowed.
    #[error("auth_query timed out")]
    Timeout,
}

/// What auth_query said about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// No row: the user does not exist (`no such user`).
    NoSuchUser,
    /// The user exists; `None` when its secret is NULL or empty (no password can match, but
    /// trust, peer and cert logins succeed, as in PgBouncer).
    Exists(Option<StoredSecret>),
}

/// Where and how a database's users are looked up.
#[derive(Debug, Clone)]
pub struct LookupPlan {
    /// The database entry the query runs in.
    pub auth_db: DatabaseConfig,
    /// The user it runs as.
    pub auth_user: String,
    /// The query.
    pub query: String,
}

impl LookupPlan {
    /// The plan for clients of `db`, or `None` when no auth_user applies.
    ///
    /// # Errors
    /// auth_dbname names no configured database, a disabled one, or the admin console.
    pub fn for_database(shared: &Shared, config: &Config, db: &DatabaseConfig) -> Result<Option<Self>, LookupError> {
        let g = &config.general;
        let Some(auth_user) = db.auth_user.clone().or_else(|| g.auth_user.clone()) else { return Ok(None) };
        let name = db.auth_dbname.as_deref().or(g.auth_dbname.as_deref()).unwrap_or(&db.name);
        let auth_db = if name == db.name { Some(db.clone()) } else { config.database(name) };
        let query = db.auth_query.clone().unwrap_or_else(|| g.auth_query.clone());
        Self::checked(shared, name, auth_db, auth_user, query).map(Some)
    }

    /// The plan for a console login by a user not in auth_file: the global auth_user in the
    /// global auth_dbname, or `None` without a global auth_user. Without an auth_dbname the
    /// console itself would be the auth database, which is refused as PgBouncer refuses it.
    ///
    /// # Errors
    /// As [`LookupPlan::for_database`].
    pub fn for_console(shared: &Shared, config: &Config) -> Result<Option<Self>, LookupError> {
        let g = &config.general;
        let Some(auth_user) = g.auth_user.clone() else { return Ok(None) };
        let name = g.auth_dbname.as_deref().unwrap_or(crate::config::ADMIN_DB);
        Self::checked(shared, name, config.database(name), auth_user, g.auth_query.clone()).map(Some)
    }

    /// PgBouncer's checks of an auth database, in its order: configured, not disabled, not
    /// the console.
    fn checked(
        shared: &Shared,
        name: &str,
        auth_db: Option<DatabaseConfig>,
        auth_user: String,
        query: String,
    ) -> Result<Self, LookupError> {
        let console = name == crate::config::ADMIN_DB;
        let auth_db = match auth_db {
            Some(d) if !console => d,
            _ if console => {
                return Err(LookupError::Config(format!(
                    "cannot use the reserved \"{name}\" database as an auth_dbname"
                )))
            }
            _ => return Err(LookupError::Config(format!("authentication database \"{name}\" is not configured."))),
        };
        if shared.pools.is_disabled(name) {
            return Err(LookupError::Disabled(name.to_owned()));
        }
        Ok(LookupPlan { auth_db, auth_user, query })
    }
}

/// Looks `user` up as `plan` says.
///
/// # Errors
/// The query failing, a wrong result shape, the server refusing auth_user, or no answer within
/// server_connect_timeout.
pub async fn lookup(
    shared: &Arc<Shared>,
    config: &Config,
    plan: &LookupPlan,
    user: &str,
) -> Result<Answer, LookupError> {
    let limit = config.general.server_connect_timeout.max(Duration::from_secs(1));
    let pool = shared.pools.get_or_create(config, &plan.auth_db, &plan.auth_user);
    // The lease closes the server if this login is given up half-way (client_login_timeout).
    let mut server = match tokio::time::timeout(limit, pool.checkout()).await {
        Err(_) => return Err(LookupError::Timeout),
        Ok(Err(crate::pool::CheckoutError::Connect(crate::server::ServerError::Rejected {
            sqlstate,
            message,
            ..
        }))) => return Err(LookupError::Server(sqlstate, message)),
        Ok(Err(crate::pool::CheckoutError::Refused(r))) => {
            return Err(LookupError::Server(r.sqlstate.clone(), r.message.clone()))
        }
        Ok(Err(e)) => return Err(LookupError::Failed(format!("no server for auth_query: {e}"))),
        Ok(Ok(s)) => s,
    };
    let rows = match tokio::time::timeout(limit, crate::server::run_lookup(&mut server, &plan.query, user)).await {
        Err(_) => {
            server.close("auth_query timed out");
            return Err(LookupError::Timeout);
        }
        Ok(Ok(rows)) => {
            server.release();
            rows
        }
        Ok(Err(e @ crate::server::ServerError::Rejected { .. })) => {
            server.release();
            return Err(LookupError::Failed(format!("error response from auth_query: {e}")));
        }
        Ok(Err(e)) => {
            server.close("unexpected response from auth_query");
            return Err(LookupError::Failed(format!("auth_query: {e}")));
        }
    };
    match rows.as_slice() {
        [] => Ok(Answer::NoSuchUser),
        [row] if row.len() == 2 && row[0].is_none() => {
            Err(LookupError::Failed("auth_query response contained null user name".into()))
        }
        [row] if row.len() == 2 => {
            Ok(Answer::Exists(row[1].as_deref().filter(|s| !s.is_empty()).map(StoredSecret::parse)))
        }
        [row] => Err(LookupError::Failed(format!("expected 2 columns from auth_query, not {}", row.len()))),
        _ => Err(LookupError::Failed("auth_query returned more than one row".into())),
    }
}
