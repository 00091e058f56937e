//! A client handed over by the previous process on online restart (`pgmux -R`): it is
//! registered as if it had just logged in (same database, user, parameters, cancel key and
//! prepared statements; a new id) and its relay goes on from where the old one stopped,
//! between two transactions. It gets no welcome: it is already logged in.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::login::Session;
use super::prepared::{self, ClientStatements};
use super::registration::Registration;
use super::{limits, relay, ClientCount, ClientIo, ClientParams};
use crate::client_counts::Counted;
use crate::config::StoredSecret;
use crate::handoff::ClientRecord;
use crate::logging::ConnTag;
use crate::net::{PeerAddr, Stream};
use crate::shared::Shared;

fn stream_of(fd: OwnedFd, record: &ClientRecord) -> std::io::Result<(Stream, PeerAddr)> {
    if record.unix {
        let s = std::os::unix::net::UnixStream::from(fd);
        s.set_nonblocking(true)?;
        return Ok((Stream::Unix(tokio::net::UnixStream::from_std(s)?), PeerAddr::Unix(record.addr.clone())));
    }
    let s = std::net::TcpStream::from(fd);
    let peer = s.peer_addr()?;
    Ok((Stream::QuietTcp(crate::net::quiet::QuietTcp::new(s)?), PeerAddr::Tcp(peer)))
}

/// Serves a handed-over client to the end.
pub async fn adopt(shared: Arc<Shared>, fd: OwnedFd, record: ClientRecord) {
    shared.clients.fetch_add(1, Ordering::Relaxed);
    let count = ClientCount(shared.clone());
    let config = shared.config();
    let (stream, peer) = match stream_of(fd, &record) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("takeover: a client's socket is unusable: {e}");
            return;
        }
    };
    let mut tag = Box::new(ConnTag::client(crate::net::next_conn_id(), &peer, config.general.listen_port));
    tag.set_login(&record.db, &record.user);
    // A database removed from the new config: the client goes, as on a RELOAD that drops it.
    let Some(db) = config.database(&record.db) else {
        crate::conn_log!(info, tag, "closing because: database removed (age=0s)");
        let mut io = ClientIo::new(stream);
        io.fatal(pgmux_protocol::sqlstate::PROTOCOL_VIOLATION, "database removed").await;
        return;
    };
    let pool = shared.pools.get_or_create(&config, &db, &record.pool_user);
    if !pool.settings().forced_user {
        if let Some(keys) = record.scram.as_ref().and_then(|k| k.to_keys()) {
            pool.set_scram_keys(keys);
        }
        if let Some(secret) = &record.looked_up_secret {
            pool.set_looked_up_secret(StoredSecret::parse(secret));
        }
    }
    // Counted as at login; a limit lowered by the new config closes nobody already in.
    let mut counted = Counted::default();
    let _ = limits::count_db(&shared, &config, &mut counted, &db.name, db.max_db_client_connections, &record.user);
    if record.looked_up_secret.is_some() || limits::known_user(&shared, &config, &record.user) {
        let _ = limits::count_user(&shared, &config, &mut counted, &record.db, &record.user);
    }
    let mut params = ClientParams::new(&config.general.track_extra_parameters);
    for (k, v) in &record.params {
        params.set(k, v);
    }
    params.share();
    let (cancel_key, cancel) = shared.cancels.adopt(record.cancel_key, config.general.peer_id);
    let mut registration = Box::new(Registration::new(&shared, &pool, cancel_key));
    registration.count_in_pool();
    cancel.belongs_to((&record.db, &pool.user), &pool.cancels);
    let ends = crate::clients::Ends::of(&peer, &stream);
    let info = shared.client_registry.register(
        &tag,
        &pool.user,
        &ends,
        crate::clients::Labels { application_name: &record.application_name, ..Default::default() },
        counted,
    );
    registration.registered_as(info.id);
    tracing::debug!(client = %peer, db = %record.db, "takeover: client adopted");
    let session = Session { registration, pool, params, cancel, info };
    let state = Box::new(crate::session_state::SessionState {
        settings: record.settings.into_iter().collect(),
        prepared: record.sql_prepared.into_iter().collect(),
    });
    let context = prepared::name_context(Some(&state.settings), &session.params);
    let statements = ClientStatements::import(record.statements, record.unnamed, context);
    session.info.show_prepared(statements.named_count());
    // A task of its own, as after a login: this function's state is freed.
    tokio::spawn(relay::resume(count, ClientIo::new(stream), (session, None), statements, Some(state)));
}
