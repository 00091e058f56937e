//! SQLSTATE codes pgmux sends. Clients decide by these, never by message text.

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
/// Feature not supported (e.g. transaction blocks in statement mode).
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// Unknown database.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// config_file_error: RELOAD could not apply the files, as PgBouncer answers it.
pub const CONFIG_FILE_ERROR: &str = "F0000";
