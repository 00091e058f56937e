//! Configuration errors: each names the file and line (or file) and the reason. A
//! [`BadValue`] is the reason alone: a value pgmux cannot take, and why; the caller adds the
//! file and line.

use std::path::PathBuf;

use super::ini::Location;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{}could not read {}: {source}", at.as_ref().map(|l| format!("{l}: ")).unwrap_or_default(), path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The `%include` line that named it, if any.
        at: Option<Location>,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line or value is wrong.
    #[error("{at}: {reason}")]
    Invalid {
        /// `file:line` or `file`.
        at: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// An error at a location.
    pub fn at(at: &Location, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { at: at.to_string(), reason: reason.into() }
    }
}

/// A value pgmux cannot take, and why (`invalid pool_mode: "sometimes" (session, ...)`). The
/// caller adds the file and line ([`ConfigError::Invalid`] keeps this text as its reason), or
/// the console says it as it is (SET).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadValue(pub String);

impl From<String> for BadValue {
    fn from(reason: String) -> Self {
        BadValue(reason)
    }
}

impl From<&str> for BadValue {
    fn from(reason: &str) -> Self {
        BadValue(reason.to_owned())
    }
}

impl From<crate::tls::BadSetting> for BadValue {
    fn from(e: crate::tls::BadSetting) -> Self {
        BadValue(e.0)
    }
}
