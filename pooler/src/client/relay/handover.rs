//! A client leaving its relay between two transactions, with nothing buffered either way: to
//! the new process at an online restart (its socket and state passed by `takeover::give`), or to
//! another worker thread of this one (the relay itself goes, its socket registered there). TLS
//! clients and clients holding a server stay.

use std::os::fd::OwnedFd;

use super::Relay;
use crate::handoff::{ClientRecord, ScramKeys};
use crate::net::{PeerAddr, Stream};

impl Relay {
    /// True when the client can move now: no server, no bytes in flight, plain socket.
    pub(super) fn can_hand_over(&self) -> bool {
        self.server.is_none()
            && self.aborted.is_none()
            && !self.dedicated
            && self.cin.is_empty()
            && self.sout.is_empty()
            && !self.need_server
            && !self.terminate
            && !self.client_eof
            && self.c_skip == 0
            && matches!(self.client, Stream::Tcp(_) | Stream::QuietTcp(_) | Stream::Unix(_))
    }

    /// Goes on on worker thread `to`: the relay is sent there, its socket moves its registration
    /// to that thread's runtime, and the session resumes as it was.
    pub(super) fn move_to(mut self, to: u16) {
        // The timer belongs to this thread's runtime; arm_timer makes a new one there.
        self.timer = None;
        self.timer_due = None;
        crate::workers::send_to(
            usize::from(to),
            Box::new(move || match self.client.rehome() {
                Ok(_) => {
                    tokio::spawn(self.run_to_end());
                }
                Err(e) => {
                    tracing::warn!(client = %self.session.peer(), "cannot move the client to worker {to}: {e}");
                    tokio::spawn(async move { Box::pin(self.finish(super::End::ClientGone)).await });
                }
            }),
        );
    }

    /// Leaves this process's books and passes the client on.
    pub(super) fn hand_over(self) {
        let Relay { shared, mut session, client, statements, carry, .. } = self;
        let Some(cancel_key) = session.registration.cancel_key() else {
            // Given back already: nothing to hand over under (cannot happen: released below).
            tracing::warn!(client = %session.peer(), "takeover: the client has no cancel key to pass on");
            return;
        };
        // Out of this process's books before the new one takes the client (and its key) in.
        session.registration.release();
        let fd: std::io::Result<OwnedFd> = match client {
            Stream::Tcp(t) => t.into_std().map(OwnedFd::from),
            Stream::QuietTcp(t) => Ok(OwnedFd::from(t.into_inner())),
            Stream::Unix(u) => u.into_std().map(OwnedFd::from),
            _ => return,
        };
        let fd = match fd {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(client = %session.peer(), "takeover: cannot detach the client's socket: {e}");
                return;
            }
        };
        let (unix, addr) = match session.peer() {
            PeerAddr::Unix(label) => (true, label.clone()),
            PeerAddr::Tcp(a) => (false, a.to_string()),
        };
        let (scram, secret) = session.pool.login_secrets();
        let (named, unnamed) = statements.export();
        let state = carry.into_state();
        let record = ClientRecord {
            db: session.info.db().to_owned(),
            user: session.info.user().to_owned(),
            pool_user: session.pool.user.clone(),
            params: session.params.values().to_vec(),
            cancel_key,
            application_name: session.info.application_name.to_string(),
            unix,
            addr,
            scram: scram.as_ref().map(ScramKeys::from_keys),
            looked_up_secret: secret.map(|s| s.to_text()),
            statements: named,
            unnamed,
            settings: state.settings.into_iter().collect(),
            sql_prepared: state.prepared.into_iter().collect(),
        };
        tracing::debug!(client = %session.peer(), db = %record.db, "takeover: client handed over");
        shared.giving.hand(record, fd);
    }
}
