//! Configuration errors: each names the file and line (or file) and the reason.

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
