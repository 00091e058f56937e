//! Socket activation, as PgBouncer supports it: listeners systemd passed (LISTEN_FDS, for this
//! process by LISTEN_PID) are used instead of binding listen_addr and unix_socket_dir.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

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

/// Whether systemd passed listening sockets to this process: LISTEN_FDS above 0, and
/// LISTEN_PID, if set, naming this process. Read from the environment without listenfd, which
/// takes the variables away ([`activated`] must still find them).
pub fn passed() -> bool {
    let for_us = std::env::var("LISTEN_PID").map_or(true, |p| p.trim() == std::process::id().to_string());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.trim().parse::<u32>().ok()).unwrap_or(0);
    for_us && count > 0
}

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
