//! systemd integration, as PgBouncer has it: `Type=notify` messages (READY once serving,
//! RELOADING / READY around a reload, STOPPING at shutdown, STATUS with the pool counts) when
//! NOTIFY_SOCKET is set. Without systemd every call is a no-op. Listeners passed by socket
//! activation are net/activation.rs's.

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
