//! `syslog = 1`: every line also goes to the local syslog socket (/dev/log) with
//! `syslog_ident` and `syslog_facility`, as PgBouncer does. An unreachable syslog is reported
//! once at start-up or RELOAD and then ignored; it never stops the pooler.

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

use super::line::Severity;

/// Why syslog cannot be written to (reported once, then ignored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    /// syslog_facility is not a facility name.
    #[error("unknown syslog_facility \"{0}\"")]
    Facility(String),
    /// No syslog socket could be connected to.
    #[error("cannot connect to syslog: {0}")]
    Connect(String),
}

/// A connected syslog writer.
pub struct SyslogSink(Logger<LoggerBackend, Formatter3164>);

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyslogSink")
    }
}

impl SyslogSink {
    /// Connects to the local syslog.
    ///
    /// # Errors
    /// An unknown facility name, or no syslog socket.
    pub fn connect(ident: &str, facility: &str) -> Result<Self, SyslogError> {
        let facility: Facility = facility.parse().map_err(|()| SyslogError::Facility(facility.to_owned()))?;
        let formatter = Formatter3164 { facility, hostname: None, process: ident.to_owned(), pid: std::process::id() };
        syslog::unix(formatter).map(SyslogSink).map_err(|e| SyslogError::Connect(e.to_string()))
    }

    /// Sends one message at the matching syslog priority; failures are dropped.
    pub fn send(&mut self, sev: Severity, msg: &str) {
        let l = &mut self.0;
        let _ = match sev.syslog_severity() {
            2 => l.crit(msg),
            3 => l.err(msg),
            4 => l.warning(msg),
            6 => l.info(msg),
            _ => l.debug(msg),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_facility_is_named() {
        let e = SyslogSink::connect("pgmux", "nowhere").unwrap_err();
        assert_eq!(e, SyslogError::Facility("nowhere".into()));
        assert_eq!(e.to_string(), "unknown syslog_facility \"nowhere\"");
    }
}
