//! One task per client connection: startup, authentication, the welcome, then the relay.
//! Every failure a client can cause ends in an ErrorResponse to that client and never touches
//! another client.

mod adopt;
mod auth;
mod buffers;
pub mod limits;
mod login;
mod params;
mod plain_scram;
mod prepared;
#[doc(hidden)]
pub use prepared::bench::ExtendedRound;
mod registration;
mod relay;
mod splice;
mod startup;
mod welcome;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pgmux_protocol::sqlstate;

pub use crate::net::client_io::{ClientError, ClientIo};
pub use adopt::adopt;
pub use params::ClientParams;

use crate::logging::ConnTag;
use crate::net::{PeerAddr, Stream};
use crate::shared::Shared;

/// Decrements the client count when the connection ends, however it ends. The relay owns it,
/// so that its task is the relay's future alone (a wrapping future would hold the relay twice:
/// once as a captured value and once as the future it awaits). It is also the relay's way to
/// the shared state (it derefs to it), which costs each client's task no second `Arc`.
pub(crate) struct ClientCount(pub(crate) Arc<Shared>);

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for ClientCount {
    type Target = Arc<Shared>;

    fn deref(&self) -> &Arc<Shared> {
        &self.0
    }
}

/// Serves one accepted connection to the end: logs it in, then hands the session to a task of
/// its own (the relay), so that what the login needed is freed and an idle client holds only the
/// relay's future.
pub async fn handle(shared: Arc<Shared>, stream: Stream, peer: PeerAddr) {
    let n = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let count = ClientCount(shared.clone());
    let config = shared.config();
    let mut io = ClientIo::new_reading(stream);
    let limit = config.general.login_timeout();
    let mut tag = Box::new(ConnTag::client(crate::net::next_conn_id(), &peer, config.general.listen_port));
    let started = tokio::time::Instant::now();
    let deadline = started + limit;
    let login = login::login(&shared, &config, &mut io, &peer, n, &mut tag, deadline);
    let result = tokio::time::timeout_at(deadline, Box::pin(login)).await;
    let refuse = |code: &'static str, msg: &str| {
        let g = &config.general;
        if g.log_disconnections {
            crate::conn_log!(info, tag, "closing because: {msg} (age={}s)", started.elapsed().as_secs());
        }
        if g.log_pooler_errors {
            crate::conn_log!(warn, tag, "pooler error: {msg}");
        }
        (code, msg.to_owned())
    };
    let session = match result {
        Err(_) => {
            let (code, msg) = refuse(sqlstate::PROTOCOL_VIOLATION, "client_login_timeout");
            io.fatal(code, &msg).await;
            return;
        }
        Ok(Err(ClientError::Refused(code, msg))) => {
            let (code, msg) = refuse(code, &msg);
            io.fatal(code, &msg).await;
            return;
        }
        Ok(Err(e)) => {
            // A client that goes away during its login (psql closing to ask for a password or
            // retrying without TLS, a port probe, a reset) is not logged, as PgBouncer.
            let gone = matches!(e, ClientError::Closed | ClientError::Io(_));
            if let ClientError::TlsHandshake(_) = e {
                // PgBouncer's warning, and no closing line.
                crate::conn_log!(warn, tag, "{e}");
            } else if config.general.log_disconnections && !gone {
                crate::conn_log!(info, tag, "closing because: {e} (age={}s)", started.elapsed().as_secs());
            }
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Ok(Some(login::Login::Admin(access, info)))) => {
            let port = config.general.listen_port;
            let end = Box::pin(crate::admin::serve(shared.clone(), io, access, port, info, &tag)).await;
            // As any client's end, with the settings in force now (a RELOAD may have come).
            if let Some(end) = end {
                let g = &shared.config().general;
                if g.log_disconnections {
                    let age = started.elapsed().as_secs();
                    crate::conn_log!(info, tag, "closing because: {} (age={age}s)", end.reason);
                }
                if end.told && g.log_pooler_errors {
                    crate::conn_log!(warn, tag, "pooler error: {}", end.reason);
                }
            }
            return;
        }
        Ok(Ok(Some(login::Login::Session(session, dedicated)))) => (session, dedicated),
    };
    tokio::spawn(relay::run(count, io, session));
}

#[cfg(test)]
mod tests {
    /// Every connected client holds the relay's future for its whole life: keeping it small is
    /// what keeps 10,000 idle clients within 20 MiB (docs/BENCHMARKS.md). Tokio's task adds a
    /// header and a trailer and rounds the whole to 128 bytes: a relay future of at most 512
    /// bytes makes a 640-byte task, 8 bytes more a 768-byte one. Slow paths (login, connecting,
    /// waiting, check queries) are boxed so that they do not count here, and so are the rare
    /// parts of `Relay` and of what it holds.
    #[tokio::test]
    async fn the_per_client_task_stays_small() {
        let text = "[pgbouncer]\n";
        let entries = crate::config::ini::parse_text(text, std::path::Path::new("t.ini")).unwrap();
        let config = crate::config::build(std::path::Path::new("t.ini"), entries).unwrap();
        let shared = crate::shared::Shared::new(config);
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let f = super::handle(shared, crate::net::Stream::Unix(a), crate::net::PeerAddr::Unix("x".into()));
        let login = std::mem::size_of_val(&f);
        let relay = std::mem::size_of_val(&relay_task(super::relay::run));
        eprintln!("client task futures: login {login} bytes, relay {relay} bytes");
        assert!(login <= 1024, "the login task's future grew to {login} bytes");
        assert!(relay <= 512, "the relay task's future grew to {relay} bytes");
    }

    /// A stand-in of the type `f` returns (a future), for its size, without calling it.
    fn relay_task<A, B, C, R>(_: impl FnOnce(A, B, C) -> R) -> std::mem::MaybeUninit<R> {
        std::mem::MaybeUninit::uninit()
    }
}
