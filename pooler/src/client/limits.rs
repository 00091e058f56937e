//! Client limits at login, counted and worded as PgBouncer: max_client_conn (all sockets, the
//! admin console exempt), max_db_client_connections (per database, the `[databases]` value over
//! the global one) and max_user_client_connections (per login user, the `[users]` value over the
//! global one). admin_users logging in to the console pass both per-database and per-user limits
//! but are still counted.

use pgmux_protocol::sqlstate;

use super::ClientError;
use crate::client_counts::Counted;
use crate::config::Config;
use crate::config::ADMIN_DB;
use crate::shared::Shared;

fn exceeded(what: &str) -> ClientError {
    ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, format!("client connections exceeded ({what})"))
}

/// True when `user` may pass the per-database and per-user limits of the console.
fn console_admin(config: &Config, db: &str, user: &str) -> bool {
    db == ADMIN_DB && config.general.admin_users.iter().any(|u| u == user)
}

/// max_client_conn: `clients` sockets are open, this one included.
///
/// # Errors
/// Over the limit, except for the admin console.
pub(super) fn check_client_conn(config: &Config, clients: usize, db: &str) -> Result<(), ClientError> {
    if clients > config.general.max_client_conn as usize && db != ADMIN_DB {
        return Err(ClientError::Refused(
            sqlstate::PROTOCOL_VIOLATION,
            "no more connections allowed (max_client_conn)".into(),
        ));
    }
    Ok(())
}

/// Counts the client in database `db` (a configured name, the `*` fallback's name, or the
/// console) and checks max_db_client_connections. `own` is the database entry's value.
///
/// # Errors
/// The database is full.
pub(super) fn count_db(
    shared: &Shared,
    config: &Config,
    counted: &mut Counted,
    db: &str,
    own: Option<u32>,
    user: &str,
) -> Result<(), ClientError> {
    let n = shared.client_counts.count_db(counted, db);
    let max = config.db_client_max(own);
    if max == 0 || n <= max || console_admin(config, db, user) {
        return Ok(());
    }
    Err(exceeded("max_db_client_connections"))
}

/// True when pgmux knows `user` as PgBouncer knows its global users: in auth_file or `[users]`,
/// or found by auth_query before. Unknown names are not counted (nor listed by SHOW USERS).
pub(super) fn known_user(shared: &Shared, config: &Config, user: &str) -> bool {
    config.auth_file.contains_key(user) || config.users.contains_key(user) || shared.client_counts.knows_user(user)
}

/// Counts the client under its login user and checks max_user_client_connections.
///
/// # Errors
/// The user is full.
pub(super) fn count_user(
    shared: &Shared,
    config: &Config,
    counted: &mut Counted,
    db: &str,
    user: &str,
) -> Result<(), ClientError> {
    let n = shared.client_counts.count_user(counted, user);
    if console_admin(config, db, user) {
        return Ok(());
    }
    let max = config.user_client_max(user);
    if max == 0 || n <= max {
        return Ok(());
    }
    Err(exceeded("max_user_client_connections"))
}
