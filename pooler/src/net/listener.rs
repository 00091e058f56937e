//! Binding the listeners pgbouncer.ini asks for: TCP on each `listen_addr` (with `*` for all)
//! and the unix socket `.s.PGSQL.<port>` in `unix_socket_dir`. Binding happens before
//! daemonizing and dropping privileges, so a port in use fails start-up with a clear exit code.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use socket2::{Domain, Socket, Type};

use crate::config::General;

/// Bound, not yet accepting, listeners.
#[derive(Debug)]
pub struct Bound {
    /// TCP listeners.
    pub tcp: Vec<std::net::TcpListener>,
    /// The unix socket and its path (removed at exit).
    pub unix: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    /// The TCP port actually bound (differs from the ini when it says 0).
    pub port: u16,
    /// The listeners came from systemd (socket activation): the unix socket file is systemd's,
    /// not removed at exit.
    pub from_systemd: bool,
}

/// Why binding failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// An OS error on one address.
    #[error("cannot listen on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(addr: impl std::fmt::Display) -> impl FnOnce(io::Error) -> BindError {
    move |source| BindError::Io { addr: addr.to_string(), source }
}

fn addresses(general: &General) -> Result<Vec<SocketAddr>, BindError> {
    let mut out = Vec::new();
    for a in &general.listen_addr {
        if a == "*" {
            out.push(SocketAddr::from(([0, 0, 0, 0], general.listen_port)));
            out.push(SocketAddr::from(([0u16; 8], general.listen_port)));
            continue;
        }
        let found = (a.as_str(), general.listen_port).to_socket_addrs().map_err(io_err(a))?;
        out.extend(found);
    }
    Ok(out)
}

fn bind_tcp(addr: SocketAddr, general: &General) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if general.so_reuseport {
        socket.set_reuse_port(true)?;
    }
    // A VIP that is not on this node yet must not stop start-up (Pigsty binds its VIP everywhere).
    let _ = socket.set_freebind(true);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(general.listen_backlog.max(1) as i32)?;
    Ok(socket.into())
}

/// The path of the unix socket for `port` in `dir`.
pub fn unix_socket_path(dir: &str, port: u16) -> PathBuf {
    Path::new(dir).join(format!(".s.PGSQL.{port}"))
}

fn bind_unix(path: &Path, general: &General) -> io::Result<std::os::unix::net::UnixListener> {
    if path.exists() {
        // A live socket means another pooler owns it; a dead one is left over and removed.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, "socket is in use by another process"));
        }
        std::fs::remove_file(path)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(general.unix_socket_mode))?;
    if let Some(group) = &general.unix_socket_group {
        let g = nix::unistd::Group::from_name(group)
            .map_err(io::Error::from)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such group: {group}")))?;
        nix::unistd::chown(path, None, Some(g.gid)).map_err(io::Error::from)?;
    }
    Ok(l)
}

/// Binds everything `general` asks for.
///
/// # Errors
/// The first address that cannot be bound.
pub fn bind(general: &General) -> Result<Bound, BindError> {
    if let Some(bound) = from_systemd(general)? {
        return Ok(bound);
    }
    let mut tcp = Vec::new();
    let mut port = general.listen_port;
    for addr in addresses(general)? {
        let mut addr = addr;
        if port != 0 {
            addr.set_port(port);
        }
        let l = bind_tcp(addr, general).map_err(io_err(addr))?;
        let local = l.local_addr().map_err(io_err(addr))?;
        port = local.port();
        tracing::info!("listening on {local}");
        tcp.push(l);
    }
    let unix = if general.unix_socket_dir.is_empty() {
        None
    } else {
        let path = unix_socket_path(&general.unix_socket_dir, port);
        let l = bind_unix(&path, general).map_err(io_err(path.display()))?;
        tracing::info!("listening on unix:{}", path.display());
        Some((l, path))
    };
    Ok(Bound { tcp, unix, port, from_systemd: false })
}

/// Socket activation: the listeners systemd passed, instead of listen_addr and
/// unix_socket_dir (as PgBouncer does). None when systemd passed none.
fn from_systemd(general: &General) -> Result<Option<Bound>, BindError> {
    let Some(got) = super::activation::activated().map_err(|e| io_err("systemd sockets")(io::Error::other(e)))? else {
        return Ok(None);
    };
    let mut port = general.listen_port;
    for l in &got.tcp {
        let local = l.local_addr().map_err(io_err("systemd socket"))?;
        l.set_nonblocking(true).map_err(io_err(local))?;
        port = local.port();
        tracing::info!("listening on {local} (from systemd)");
    }
    if let Some((l, path)) = &got.unix {
        l.set_nonblocking(true).map_err(io_err(path.display()))?;
        tracing::info!("listening on unix:{} (from systemd)", path.display());
    }
    Ok(Some(Bound { tcp: got.tcp, unix: got.unix, port, from_systemd: true }))
}
