//! SQLSTATE codes pgmux sends. Clients decide by these, never by message text.

/// Success: the code of pgmux's own NOTICEs (login_notify_message, query_wait_notify).
pub const SUCCESSFUL_COMPLETION: &str = "00000";
/// Generic pooler error, as PgBouncer's default for its own errors.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// Could not connect to or log in to the server.
pub const CONNECTION_FAILURE: &str = "08006";
/// Wrong password or unknown user.
pub const INVALID_PASSWORD: &str = "28P01";
/// Authentication rejected for a reason other than the password.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// max_client_conn and friends.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// Shutdown of the pooler.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// A backend ended because another one crashed (PostgreSQL resets them all).
pub const CRASH_SHUTDOWN: &str = "57P02";
/// Feature not supported (e.g. transaction blocks in statement mode).
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// Unknown database.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// The server is starting up or shutting down and refuses connections.
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// Permission denied (e.g. a role without LOGIN or CONNECT).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// Internal error in the configuration (PgBouncer's RELOAD failure).
pub const CONFIG_FILE_ERROR: &str = "F0000";

/// The codes PostgreSQL sends when it refuses a login, so that pgmux can pass a server's refusal
/// on to the waiting clients with its own SQLSTATE (as PgBouncer does).
const LOGIN_REFUSALS: &[&str] = &[
    PROTOCOL_VIOLATION,
    CONNECTION_FAILURE,
    INVALID_PASSWORD,
    INVALID_AUTHORIZATION,
    TOO_MANY_CONNECTIONS,
    ADMIN_SHUTDOWN,
    FEATURE_NOT_SUPPORTED,
    INVALID_CATALOG_NAME,
    CANNOT_CONNECT_NOW,
    INSUFFICIENT_PRIVILEGE,
];

/// `code` as one of the constants above, when it is one PostgreSQL sends at login.
pub fn known(code: &str) -> Option<&'static str> {
    LOGIN_REFUSALS.iter().copied().find(|c| *c == code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn login_refusals_are_known_and_others_are_not() {
        assert_eq!(super::known("3D000"), Some(super::INVALID_CATALOG_NAME));
        assert_eq!(super::known("28P01"), Some(super::INVALID_PASSWORD));
        assert_eq!(super::known("XX000"), None);
    }
}
