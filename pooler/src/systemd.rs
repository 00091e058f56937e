//! systemd integration, as PgBouncer has it: `Type=notify` messages (READY once serving,
//! RELOADING / READY around a reload, STOPPING at shutdown, STATUS with the pool counts) when
//! NOTIFY_SOCKET is set, and listeners passed by socket activation (LISTEN_FDS) used instead of
//! binding listen_addr and unix_socket_dir. Without systemd every call is a no-op.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use sd_notify::NotifyState;

use crate::shared::Shared;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Serving: the listeners are up and the signal handlers in place.
pub fn ready(shared: &Shared) {
    send(&[NotifyState::Ready, NotifyState::Status(&status(shared))]);
}

/// A reload starts (SIGHUP, RELOAD); `ready` follows when it is done.
pub fn reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000 + i128::from(t.tv_nsec()) / 1000)
        .unwrap_or(0);
    send(&[NotifyState::Reloading, NotifyState::MonotonicUsec(now)]);
}

/// Shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The STATUS line `systemctl status` shows.
pub fn report(shared: &Shared) {
    send(&[NotifyState::Status(&status(shared))]);
}

fn status(shared: &Shared) -> String {
    let (mut active, mut waiting, mut servers) = (0, 0, 0);
    let pools = shared.pools.all();
    for p in &pools {
        active += p.clients_active.load(std::sync::atomic::Ordering::Relaxed).max(0);
        waiting += p.clients_waiting.load(std::sync::atomic::Ordering::Relaxed).max(0);
        servers += p.counts().total;
    }
    let clients = shared.clients.load(std::sync::atomic::Ordering::Relaxed);
    format!("{clients} clients ({active} active, {waiting} waiting), {servers} servers, {} pools", pools.len())
}

/// Listeners systemd passed (socket activation).
#[derive(Debug, Default)]
pub struct Activated {
    /// TCP listeners.
    pub tcp: Vec<std::net::TcpListener>,
    /// A unix socket listener and its path.
    pub unix: Option<(UnixListener, PathBuf)>,
}

/// Why the sockets systemd passed cannot be used (socket activation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("socket activation: {0}")]
pub struct ActivationError(pub String);

/// The listening sockets systemd passed to this process, if any (LISTEN_PID names it).
///
/// # Errors
/// A passed descriptor that is neither a TCP nor a unix stream listener, or more than one unix
/// socket.
pub fn activated() -> Result<Option<Activated>, ActivationError> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut got = Activated::default();
    for i in 0..fds.len() {
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            got.tcp.push(l);
            continue;
        }
        match fds.take_unix_listener(i) {
            Ok(Some(l)) => {
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(PathBuf::from))
                    .ok_or_else(|| ActivationError(format!("descriptor {} is an unnamed unix socket", i + 3)))?;
                if got.unix.is_some() {
                    return Err(ActivationError("more than one unix socket passed".into()));
                }
                got.unix = Some((l, path));
            }
            _ => return Err(ActivationError(format!("descriptor {} is not a stream listener", i + 3))),
        }
    }
    Ok(Some(got))
}
