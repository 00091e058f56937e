//! The new process's side of an online restart (`pgmux -R`): before serving, it logs into the
//! running process's console over the unix socket, asks for `TAKEOVER` and receives the
//! listeners; once serving, it adopts each client the old process hands over.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pgmux_protocol::build;

use crate::config::General;
use crate::handoff::{fds, ClientRecord, Frame, ListenerKind};
use crate::net::listener::{unix_socket_path, Bound};
use crate::shared::Shared;

/// Why the online restart could not take over, in words for the operator (`main` prints
/// `online restart failed: REASON`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TakeoverError {
    /// unix_socket_dir is empty, so the running process cannot be reached.
    #[error("-R needs unix_socket_dir: the running process is reached through its unix socket")]
    NoSocket,
    /// Nothing listens on the unix socket: no process to take over (PgBouncer then starts
    /// normally).
    #[error("{0}")]
    NotRunning(String),
    /// Reaching, writing to or reading from the running process failed, or a socket it passed
    /// could not be set up.
    #[error("{0}")]
    Io(String),
    /// The running process refused the console login or the takeover (its message).
    #[error("{0}")]
    Refused(String),
    /// The running process answered with something a takeover does not expect.
    #[error("{0}")]
    Protocol(String),
}

/// What the running process passed: its listeners, and the channel clients will come through.
#[derive(Debug)]
pub struct Taken {
    /// The client listeners.
    pub bound: Bound,
    /// The metrics endpoint, if it had one.
    pub exporter: Option<std::net::TcpListener>,
    /// The console connection the clients arrive on.
    pub channel: UnixStream,
}

fn read_message(s: &mut UnixStream) -> Result<(u8, Vec<u8>), TakeoverError> {
    use TakeoverError::{Io, Protocol};
    let mut head = [0u8; 5];
    s.read_exact(&mut head).map_err(|e| Io(format!("the running process hung up: {e}")))?;
    let len = (&head[1..]).get_i32();
    if !(4..=1 << 20).contains(&len) {
        return Err(Protocol("the running process sent a malformed message".into()));
    }
    let mut body = vec![0u8; len as usize - 4];
    s.read_exact(&mut body).map_err(|e| Io(format!("the running process hung up: {e}")))?;
    Ok((head[0], body))
}

/// The `M` field of an ErrorResponse body.
fn error_text(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find(|f| f.first() == Some(&b'M'))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
        .unwrap_or_else(|| "refused".into())
}

/// Logs in to the running process's console and takes its listeners.
///
/// # Errors
/// No unix socket configured, nothing running there, or the takeover refused; in words for
/// the operator.
pub fn connect(g: &General) -> Result<Taken, TakeoverError> {
    use TakeoverError::{Io, Protocol, Refused};
    if g.unix_socket_dir.is_empty() {
        return Err(TakeoverError::NoSocket);
    }
    let path = unix_socket_path(&g.unix_socket_dir, g.listen_port);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        let why = format!("cannot reach the running process at {}: {e}", path.display());
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => TakeoverError::NotRunning(why),
            _ => Io(why),
        }
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut out = BytesMut::new();
    build::startup_message(&mut out, &[("user", "pgbouncer"), ("database", crate::config::ADMIN_DB)]);
    fds::write_blocking(&mut s, &out).map_err(|e| Io(format!("cannot talk to the running process: {e}")))?;
    loop {
        match read_message(&mut s)? {
            (b'Z', _) => break,
            (b'E', body) => {
                return Err(Refused(format!("the running process refused the console login: {}", error_text(&body))))
            }
            (b'R', body) if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                return Err(Refused("the running process asks for a password: -R logs in as pgbouncer over the unix socket, as the same OS user".into()))
            }
            _ => {}
        }
    }
    out.clear();
    build::query(&mut out, super::COMMAND);
    fds::write_blocking(&mut s, &out).map_err(|e| Io(format!("cannot talk to the running process: {e}")))?;
    // Frames start with a length below 2^24 (a zero byte); a refusal is an ErrorResponse ('E'),
    // as from a process that is not pgmux or does not allow it.
    let mut first = [0u8; 1];
    nix::sys::socket::recv(s.as_raw_fd(), &mut first, nix::sys::socket::MsgFlags::MSG_PEEK)
        .map_err(|e| Io(format!("takeover failed: {e}")))?;
    if first[0] == b'E' {
        let (_, body) = read_message(&mut s)?;
        return Err(Refused(format!("the running process refused the takeover: {}", error_text(&body))));
    }
    let (body, passed) = fds::recv_blocking(&mut s).map_err(|e| Io(format!("takeover failed: {e}")))?;
    let Ok(Frame::Listeners(kinds)) = serde_json::from_slice::<Frame>(&body) else {
        return Err(Protocol("the running process answered the takeover with something unexpected".into()));
    };
    if kinds.len() != passed.len() {
        return Err(Protocol("the running process passed fewer sockets than it named".into()));
    }
    let _ = s.set_read_timeout(None);
    let mut bound = Bound { tcp: Vec::new(), unix: None, port: g.listen_port, from_systemd: false };
    let mut exporter = None;
    for (kind, fd) in kinds.into_iter().zip(passed) {
        match kind {
            ListenerKind::Tcp => {
                let l = std::net::TcpListener::from(fd);
                if let Ok(a) = l.local_addr() {
                    bound.port = a.port();
                }
                bound.tcp.push(nonblocking(l)?);
            }
            ListenerKind::Exporter => exporter = Some(nonblocking(std::net::TcpListener::from(fd))?),
            ListenerKind::Unix(p) => {
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true).map_err(|e| Io(e.to_string()))?;
                bound.unix = Some((l, p.into()));
            }
        }
    }
    Ok(Taken { bound, exporter, channel: s })
}

fn nonblocking(l: std::net::TcpListener) -> Result<std::net::TcpListener, TakeoverError> {
    l.set_nonblocking(true).map_err(|e| TakeoverError::Io(e.to_string()))?;
    Ok(l)
}

/// Tells the old process this one serves, then adopts the clients it hands over until it says
/// `Done` (or goes away); meanwhile cancel requests with keys this process does not know go back
/// to it.
pub async fn adopt_clients(shared: Arc<Shared>, channel: UnixStream, adopt: Adopt) {
    let (mut sock, mut out) = match split(channel) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!("takeover: cannot talk to the previous process: {e}");
            return;
        }
    };
    if let Err(e) = fds::send(&mut out, &Frame::Serving.encode(), &[]).await {
        tracing::error!("takeover: the previous process hung up: {e}");
        return;
    }
    let (cancels, mut keys) = tokio::sync::mpsc::unbounded_channel::<(i32, i32)>();
    shared.cancels.set_previous(Some(cancels));
    let writer = tokio::spawn(async move {
        while let Some((pid, secret)) = keys.recv().await {
            if fds::send(&mut out, &Frame::Cancel(pid, secret).encode(), &[]).await.is_err() {
                return;
            }
        }
    });
    let adopted = adopt_until_done(&shared, &mut sock, adopt).await;
    shared.cancels.set_previous(None);
    writer.abort();
    tracing::info!("takeover finished: {adopted} clients taken over from the previous process");
}

/// Two handles on the channel: one reads the old process's frames, one writes ours.
fn split(channel: UnixStream) -> std::io::Result<(tokio::net::UnixStream, tokio::net::UnixStream)> {
    channel.set_nonblocking(true)?;
    let copy = channel.try_clone()?;
    Ok((tokio::net::UnixStream::from_std(channel)?, tokio::net::UnixStream::from_std(copy)?))
}

/// Starts a session for a client handed over (`client::adopt`, given by the binary, so that this
/// module stays below the client's).
pub type Adopt = fn(Arc<Shared>, OwnedFd, ClientRecord);

/// Starts a session for each client frame; the number adopted when the old process is done.
async fn adopt_until_done(shared: &Arc<Shared>, sock: &mut tokio::net::UnixStream, adopt: Adopt) -> usize {
    let mut adopted = 0usize;
    loop {
        let (body, mut passed) = match fds::recv(sock).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                tracing::warn!("takeover: the previous process hung up before it was done");
                return adopted;
            }
            Err(e) => {
                tracing::error!("takeover: reading from the previous process failed: {e}");
                return adopted;
            }
        };
        match serde_json::from_slice::<Frame>(&body) {
            Ok(Frame::Client(record)) => {
                let Some(fd): Option<OwnedFd> = passed.pop() else {
                    tracing::warn!("takeover: a client arrived without its socket");
                    continue;
                };
                adopted += 1;
                adopt(shared.clone(), fd, *record);
            }
            Ok(Frame::Done) => return adopted,
            Ok(_) | Err(_) => tracing::warn!("takeover: unexpected frame from the previous process"),
        }
    }
}
