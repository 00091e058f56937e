//! Opening a server for a pool: the login at the pool's target with its credentials, the log
//! lines PgBouncer writes, and what a failure does to the clients waiting (a refusal reaches them
//! all; a failed connect is retried after server_login_retry).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::time::Instant;

use super::waiter::{Handoff, LoginRefusal, SlotGuard};
use super::{CheckoutError, Pool, PoolSettings};
use crate::logging::ConnTag;
use crate::server::{self, ServerConn, ServerError};

impl Pool {
    /// Opens a server at the target in force now: a client that waited through a RELOAD or a
    /// leader change holds older settings.
    pub(super) async fn open(
        self: &Arc<Self>,
        guard: SlotGuard,
        _caller: &PoolSettings,
    ) -> Result<Box<ServerConn>, CheckoutError> {
        let settings = self.settings();
        self.open_to(guard, &settings, &settings.target, false).await
    }

    /// Opens a server to `target`. A `dedicated` one (replication) does not speak for the pool:
    /// its refusal is `login failed` for its own client only.
    pub(super) async fn open_to(
        self: &Arc<Self>,
        guard: SlotGuard,
        settings: &PoolSettings,
        target: &server::Target,
        dedicated: bool,
    ) -> Result<Box<ServerConn>, CheckoutError> {
        let creds = self.credentials(settings);
        // One pick per connection: the host in the log lines is the host dialled.
        let (picked, host) = target.pick_host();
        let mut tag = ConnTag::server_to(crate::net::next_conn_id(), &self.db, &self.user, &host, target.port);
        // The TLS settings in force now, not the caller's snapshot: a client waiting through
        // TLS failures must get the settings a SET or RELOAD fixed.
        let tls = self.settings().tls.clone();
        // The generation this server is made under: a RECONNECT or a move to another target
        // while it connects makes it stale.
        let generation = self.generation.load(Relaxed);
        let started = Instant::now();
        let result = server::connect(
            target,
            (picked, &host),
            &creds,
            tls.as_ref(),
            settings.connect_timeout,
            server::Opening {
                tag: &mut tag,
                log_connections: settings.log_connections,
                listed_in: Some(&self.servers),
            },
        )
        .await;
        let mut s = match result {
            Ok(s) => s,
            Err(e) if dedicated => {
                if let ServerError::Rejected { severity, message, .. } = &e {
                    tracing::error!("S: login failed: {severity} {message}");
                }
                let reason = if e.is_refusal() { "login failed".to_owned() } else { e.log_reason() };
                if settings.log_disconnections {
                    crate::conn_log!(info, tag, "closing because: {reason} (age={}s)", started.elapsed().as_secs());
                }
                return Err(CheckoutError::Refused(Arc::new(LoginRefusal {
                    sqlstate: pgmux_protocol::sqlstate::PROTOCOL_VIOLATION.into(),
                    message: reason,
                })));
            }
            Err(e) => {
                let refusal = match &e {
                    ServerError::Rejected { severity, message, sqlstate } => {
                        tracing::warn!("server login failed: {severity} {message}");
                        e.is_refusal()
                            .then(|| Arc::new(LoginRefusal { sqlstate: sqlstate.clone(), message: message.clone() }))
                    }
                    ServerError::Auth(reason) => {
                        crate::conn_log!(error, tag, "{reason}");
                        Some(Arc::new(LoginRefusal {
                            sqlstate: pgmux_protocol::sqlstate::PROTOCOL_VIOLATION.into(),
                            message: "server login failed: wrong password type".into(),
                        }))
                    }
                    ServerError::TlsHandshake(m) => {
                        tracing::warn!("TLS handshake error: {m}");
                        None
                    }
                    _ => None,
                };
                if settings.log_disconnections {
                    let age = started.elapsed().as_secs();
                    crate::conn_log!(info, tag, "closing because: {} (age={age}s)", e.log_reason());
                }
                let mut s = self.state.lock();
                s.last_failure = Some((Instant::now(), e.log_reason(), refusal.clone()));
                s.proven = false;
                s.probing = false;
                if let Some(r) = refusal {
                    // Every client waiting for this pool gets the server's refusal now.
                    for w in s.waiters.drain(..) {
                        let _ = w.tx.send(Handoff::Refused(r.clone()));
                    }
                } else {
                    // Waiters that were only waiting for a release look again: they queue anew
                    // and, while the pool is unproven, re-check its limits on their own.
                    s.waiters.clear();
                }
                drop(s);
                return Err(e.into());
            }
        };
        if let Some(q) = &settings.connect_query {
            if let Err(e) = server::run_simple_query(&mut s, q).await {
                crate::conn_log!(warn, s.tag, "connect_query failed: {e}");
                self.log_close(&s, "exec_on_connect query failed", settings);
                return Err(e.into());
            }
        }
        {
            let mut st = self.state.lock();
            st.last_failure = None;
            if !st.proven {
                // The probe got through: clients that waited for it may all connect now.
                st.proven = true;
                st.probing = false;
                let settings = self.settings();
                while self.hand_slot_locked(&mut st, &settings) {}
            }
        }
        s.generation = generation;
        // Its pool's now: no longer `new` in SHOW SERVERS.
        if let Some(e) = &s.tag.entry {
            e.logged_in();
        }
        {
            let mut w = self.welcome.lock();
            if w.is_none() {
                *w = Some(Arc::new(s.params.clone()));
            }
        }
        guard.disarm();
        Ok(s)
    }
}
