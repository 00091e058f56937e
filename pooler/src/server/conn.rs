//! One logged-in server connection, owned by its pool while idle and by one client task while
//! leased. It carries what the pooler must remember: parameters the server reported, its cancel
//! key, and when it was made and last used.

use std::sync::Arc;

use bytes::BytesMut;

use super::ServerStatements;
use crate::clock::Micros;
use crate::net::{PeerAddr, Stream};

/// Parameters a server reported with ParameterStatus, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerParams(pub Vec<(String, String)>);

impl ServerParams {
    /// The value of `name` (case-insensitive, as PostgreSQL's GUC names).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Forgets the value of `name` (every value the server does not report, for `None`): pgmux
    /// no longer knows it, so the next client's sync sets it. True when one was forgotten.
    pub fn forget_unreported(&mut self, name: Option<&str>) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| is_reported(k) || name.is_some_and(|n| !k.eq_ignore_ascii_case(n)));
        self.0.len() != before
    }

    /// Records a reported value.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some((_, v)) => {
                if v != value {
                    *v = value.to_owned();
                }
            }
            None => self.0.push((name.to_owned(), value.to_owned())),
        }
    }
}

/// Settings PostgreSQL reports with ParameterStatus (GUC_REPORT, versions 14 to 17), in lower case.
const REPORTED: [&str; 14] = [
    "application_name",
    "client_encoding",
    "datestyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "intervalstyle",
    "is_superuser",
    "scram_iterations",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "timezone",
];

/// True when PostgreSQL reports `name` (any case) with ParameterStatus.
pub fn is_reported(name: &str) -> bool {
    REPORTED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// A server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: Stream,
    /// pgmux's id for logs and SHOW SERVERS.
    pub id: u64,
    /// Its log prefix (`S-0x2b: p0/alice@127.0.0.1:5432`) and its SHOW SERVERS row; boxed,
    /// because a server travels by value through every client's future.
    pub tag: Box<crate::servers::ServerIdent>,
    /// Where it is connected (for cancel requests); shared so that attaching costs no copy.
    pub addr: Arc<PeerAddr>,
    /// The server's BackendKeyData (pid, secret).
    pub backend_key: (i32, i32),
    /// Parameters the server reported.
    pub params: ServerParams,
    /// Login time (server_lifetime).
    pub created: Micros,
    /// Last release to the pool (server_idle_timeout, server_check_delay).
    pub last_used: Micros,
    /// Bytes read past the end of login (normally none); the relay consumes them first.
    pub leftover: BytesMut,
    /// Statements pgmux prepared here for clients (transaction and statement modes).
    pub statements: ServerStatements,
    /// The batch in flight here that a client's cached unnamed statement opened, kept to be sent
    /// again if the statement is refused (client/prepared/replay.rs). Held by the server, not
    /// the client: servers are few, and its capacity serves every transaction on it.
    pub kept_batch: BytesMut,
    /// The text of the client's lone BEGIN while its block holds nothing else: a kept batch
    /// refused there is sent again behind a ROLLBACK and this BEGIN (replay.rs).
    pub kept_begin: BytesMut,
    /// Fingerprint of the client parameters this server was last made to match (0: none).
    pub synced_params: u64,
    /// Settings and SQL prepared statements made on it by clients (transaction mode).
    pub session_state: Box<crate::session_state::SessionState>,
    /// Pool generation it was made under (RECONNECT closes older ones).
    pub generation: u64,
    /// The worker whose runtime its socket is registered with (workers.rs).
    pub home: u16,
}

impl ServerConn {
    /// Moves the socket's registration to the calling thread's runtime when it is registered
    /// with another worker's, so that its readiness wakes the thread of the client using it
    /// (a TLS server stays where it is).
    pub fn come_home(&mut self) {
        let here = crate::workers::here();
        if self.home != here {
            match self.stream.rehome() {
                Ok(true) => self.home = here,
                Ok(false) => {}
                // The stream is left detached: its next use fails and the server is closed.
                Err(e) => crate::conn_log!(warn, &self.tag.tag, "cannot move server socket to this thread: {e}"),
            }
        }
    }

    /// Gives SHOW SERVERS the count of statements prepared here, when it changed.
    #[inline]
    pub fn show_prepared(&mut self) {
        if let Some(n) = self.statements.count_changed() {
            if let Some(entry) = &self.tag.entry {
                entry.set_prepared(n);
            }
        }
    }

    /// Bookkeeping after pgmux ran a reset query (`DISCARD ALL`): what the query undid is gone.
    /// The server's prepared statements go only with a `DISCARD ALL` or `DEALLOCATE ALL` in it,
    /// as PgBouncer forgets them only on those commands' tags: a server_reset_query of another
    /// kind leaves them prepared, and forgetting them would make pgmux prepare one again under
    /// a name the server still has (`42P05 prepared statement ... already exists`).
    pub fn reset_done(&mut self, sql: &str) {
        use crate::session_sql::Effect;
        for e in crate::session_sql::effects(sql.as_bytes()) {
            if matches!(e, Effect::DiscardAll | Effect::DeallocateAll) {
                self.statements.clear();
            }
            self.apply_effect(&e);
        }
        self.show_prepared();
    }

    /// Records a session-state effect that took place here. One that changes a setting pgmux
    /// records without a report (a tracked parameter PostgreSQL does not report, such as
    /// search_path) makes that record stale: it is forgotten, and the next client's tracked
    /// parameters are set again.
    pub fn apply_effect(&mut self, e: &crate::session_sql::Effect) {
        use crate::session_sql::Effect;
        self.session_state.apply(e);
        let forgot = match e {
            Effect::Set { name, .. } | Effect::Reset(name) => self.params.forget_unreported(Some(name)),
            Effect::ResetAll | Effect::DiscardAll => self.params.forget_unreported(None),
            _ => false,
        };
        if forgot {
            self.synced_params = 0;
        }
    }

    /// True when the server closed or sent something while idle in the pool: a backend that was
    /// terminated or a PostgreSQL that shut down. Such a server must not be handed out.
    pub fn is_dead(&self) -> bool {
        !matches!(self.stream.peek_now(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}
