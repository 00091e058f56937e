//! Why pgmux could not read the Patroni cluster, or why a switchover did not happen: each
//! variant names the step that failed, and its text is what the log, SHOW PATRONI
//! (`last_error`), the console (`SWITCHOVER failed: ...`) and `pgmux` tools print.

use std::time::Duration;

use super::http::HttpError;

/// What failed while following Patroni or switching over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatroniError {
    /// The REST API (or etcd's JSON gateway) could not be reached, or answered with a status
    /// other than 200.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// An answer's body is not the JSON expected (`bad /cluster answer: ...`).
    #[error("{0}")]
    Body(String),
    /// patroni_url is empty.
    #[error("patroni_url is not set")]
    NotConfigured,
    /// A SWITCHOVER of ours is already running.
    #[error("a switchover is already running")]
    AlreadyRunning,
    /// No running leader to switch over from, or no running replica to switch over to.
    #[error("{0}")]
    NoCandidate(String),
    /// Transactions in flight did not finish within patroni_drain_timeout.
    #[error("switchover aborted: transactions still running after {0:?} (patroni_drain_timeout)")]
    NotDrained(Duration),
    /// Patroni answered `POST /switchover` with an error.
    #[error("Patroni refused the switchover ({status}): {text}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Patroni's answer, trimmed.
        text: String,
    },
    /// The candidate did not become the leader taking writes within patroni_switchover_timeout.
    #[error("switchover to {member} did not complete in {timeout:?}")]
    NotComplete {
        /// The candidate.
        member: String,
        /// patroni_switchover_timeout.
        timeout: Duration,
    },
    /// A member does not take writes (yet): the connect, the login or the query failed (the
    /// server's message).
    #[error("{0}")]
    NotWritable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_the_console_s() {
        let t = Duration::from_millis(1500);
        assert_eq!(PatroniError::NotConfigured.to_string(), "patroni_url is not set");
        assert_eq!(PatroniError::AlreadyRunning.to_string(), "a switchover is already running");
        assert_eq!(
            PatroniError::NotDrained(t).to_string(),
            "switchover aborted: transactions still running after 1.5s (patroni_drain_timeout)"
        );
        assert_eq!(
            PatroniError::Refused { status: 412, text: "no candidate".into() }.to_string(),
            "Patroni refused the switchover (412): no candidate"
        );
        let late = PatroniError::NotComplete { member: "pg2".into(), timeout: t };
        assert_eq!(late.to_string(), "switchover to pg2 did not complete in 1.5s");
        assert_eq!(PatroniError::from(HttpError("h:1: refused".into())).to_string(), "h:1: refused");
    }
}
