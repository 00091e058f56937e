//! How a session ends, and whose doing it was: the client (it left, or broke the protocol), its
//! server (it failed under the client), or pgmux (a timeout, KILL, a pool that cannot serve).
//! PgBouncer's `closing because:` line keeps its words; the side goes on a debug line of its
//! own (`session ended by server: server conn crashed?`).

use std::fmt;

use pgmux_protocol::sqlstate;

/// Who caused a session's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client: it closed, or sent what the protocol does not allow.
    Client,
    /// The client's server: its socket failed, or it refused what the session needs.
    Server,
    /// pgmux's own rules: timeouts, KILL, SHUTDOWN, a pool without servers.
    Pooler,
}

impl Side {
    /// Its place in `PoolStats::sessions_closed` (pool::SESSION_END_SIDES).
    pub(crate) fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
            Side::Pooler => 2,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
            Side::Pooler => "pgmux",
        })
    }
}

/// An error that closes the client with a FATAL ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Fault {
    /// Whose failure it is.
    pub side: Side,
    /// The SQLSTATE the client gets.
    pub code: &'static str,
    /// The message, in PgBouncer's words where it has them.
    pub message: String,
}

impl Fault {
    /// The client broke the protocol (08P01).
    pub(crate) fn client(message: impl Into<String>) -> Self {
        Self { side: Side::Client, code: sqlstate::PROTOCOL_VIOLATION, message: message.into() }
    }

    /// The server failed under the client (08P01, as PgBouncer reports a lost server).
    pub(crate) fn server(message: impl Into<String>) -> Self {
        Self { side: Side::Server, code: sqlstate::PROTOCOL_VIOLATION, message: message.into() }
    }

    /// pgmux ends the session by one of its rules.
    pub(crate) fn pooler(code: &'static str, message: impl Into<String>) -> Self {
        Self { side: Side::Pooler, code, message: message.into() }
    }
}

/// Why the relay's loop stops.
#[derive(Debug)]
pub(super) enum End {
    /// The client said Terminate or closed its socket.
    ClientGone,
    /// The session is closed with this error (boxed: an `End` is held in every client's task,
    /// where a `Fault` inline would take 48 bytes).
    Fatal(Box<Fault>),
    /// Online restart: the client moves to the new process.
    HandOver,
    /// The client moves to this worker thread (workers/load.rs): its relay goes on there.
    Move(u16),
}

impl From<Fault> for End {
    fn from(f: Fault) -> Self {
        End::Fatal(Box::new(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_gets_its_sqlstate_and_name() {
        let c = Fault::client("invalid client message type 'x'");
        let s = Fault::server("server conn crashed?");
        let p = Fault::pooler(sqlstate::ADMIN_SHUTDOWN, "server shutting down");
        assert_eq!((c.side, c.code), (Side::Client, sqlstate::PROTOCOL_VIOLATION));
        assert_eq!((s.side, s.code), (Side::Server, sqlstate::PROTOCOL_VIOLATION));
        assert_eq!((p.side, p.code), (Side::Pooler, sqlstate::ADMIN_SHUTDOWN));
        assert_eq!(format!("{} / {} / {}", c.side, s.side, p.side), "client / server / pgmux");
        assert_eq!(s.to_string(), "server conn crashed?");
        assert!(matches!(End::from(p), End::Fatal(f) if f.side == Side::Pooler));
    }
}
