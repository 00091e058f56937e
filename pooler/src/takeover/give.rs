//! The running process's side of an online restart: on the console command `TAKEOVER` (user
//! `pgbouncer`, unix socket, same OS user) it passes its listeners, stops accepting, and hands
//! each client over as soon as the client is idle; `Done` when none is left.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;

use crate::handoff::{fds, Frame, Giving, ListenerKind};
use crate::shared::{RunState, Shared};

/// Clients other than console sessions (the takeover's own included), logging in or logged in.
fn pooled_clients(shared: &Shared) -> i64 {
    shared.client_count() as i64 - shared.admin_clients.load(Ordering::Relaxed)
}

/// The console connection as two handles on one socket: frames go out on one while the other
/// waits for what the new process sends back.
fn split(sock: UnixStream) -> std::io::Result<(UnixStream, UnixStream)> {
    let std = sock.into_std()?;
    let copy = std.try_clone()?;
    Ok((UnixStream::from_std(std)?, UnixStream::from_std(copy)?))
}

/// How long a new process may take from receiving the listeners to serving on them.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Runs a takeover over `sock` (the console connection of the new process) to its end.
pub async fn give(shared: Arc<Shared>, sock: UnixStream) {
    let giving = &shared.giving;
    if !giving.start() {
        tracing::warn!("takeover: refused a second takeover request");
        return;
    }
    let (mut sock, mut back) = match split(sock) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!("takeover: {e}");
            giving.withdraw();
            return;
        }
    };
    let mut rx = giving.open();
    if let Err(e) = pass_listeners(giving, &mut sock, &mut back).await {
        // Nothing has moved: this process goes on serving as before.
        tracing::error!("takeover: the new process did not start: {e}; serving on");
        giving.withdraw();
        return;
    }
    giving.serving();
    giving.drop_listeners();
    tracing::info!("takeover: the new process serves, handing over clients as they become idle");
    // The accept loops stop (unless a shutdown began meanwhile, which goes on); clients that
    // are idle now are woken to move at once.
    if shared.state() == RunState::Running {
        shared.set_state(RunState::TakenOver);
    }
    for c in shared.client_registry.all() {
        if !c.is_console() {
            c.nudge();
        }
    }
    let mut back_task = tokio::spawn(relay_cancels(shared.clone(), back));
    let mut moved = 0usize;
    let mut lost = false;
    while !lost {
        tokio::select! {
            parcel = rx.recv() => {
                let Some((record, fd)) = parcel else { break };
                let frame = Frame::Client(Box::new(record)).encode();
                match fds::send(&mut sock, &frame, &[fd.as_fd()]).await {
                    Ok(()) => moved += 1,
                    Err(e) => {
                        tracing::error!("takeover: the new process stopped taking clients: {e}");
                        lost = true;
                    }
                }
            }
            _ = &mut back_task => {
                tracing::error!("takeover: the new process hung up before every client moved");
                lost = true;
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if pooled_clients(&shared) <= 0 && rx.is_empty() {
                    break;
                }
            }
        }
    }
    if !lost {
        if let Err(e) = fds::send(&mut sock, &Frame::Done.encode(), &[]).await {
            tracing::error!("takeover: the new process hung up at the end: {e}");
        }
        tracing::info!("takeover: {moved} clients handed over, exiting");
        back_task.abort();
        giving.finish();
        return;
    }
    // The clients still here stay until they leave, as after SHUTDOWN WAIT_FOR_CLIENTS; the
    // listeners are the new process's (or gone with it).
    back_task.abort();
    giving.stop_handing();
    if matches!(shared.state(), RunState::TakenOver | RunState::Running) {
        shared.set_state(RunState::WaitForClients);
    }
}

/// Sends copies of the listeners and waits until the new process serves on them.
async fn pass_listeners(giving: &Giving, sock: &mut UnixStream, back: &mut UnixStream) -> std::io::Result<()> {
    let listeners = giving.copies()?;
    let kinds: Vec<ListenerKind> = listeners.iter().map(|(k, _)| k.clone()).collect();
    let raw: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| fd.as_fd()).collect();
    fds::send(sock, &Frame::Listeners(kinds).encode(), &raw).await?;
    drop(raw);
    drop(listeners);
    let answer = tokio::time::timeout(START_LIMIT, fds::recv(back))
        .await
        .map_err(|_| std::io::Error::other(format!("no answer within {}s", START_LIMIT.as_secs())))??;
    match answer.map(|(body, _)| serde_json::from_slice::<Frame>(&body)) {
        Some(Ok(Frame::Serving)) => Ok(()),
        None => Err(std::io::Error::other("it hung up")),
        Some(_) => Err(std::io::Error::other("it answered something unexpected")),
    }
}

/// Cancels the new process passes back for keys it did not give out (clients still here);
/// returns when it hangs up.
async fn relay_cancels(shared: Arc<Shared>, mut back: UnixStream) {
    while let Ok(Some((body, _))) = fds::recv(&mut back).await {
        if let Ok(Frame::Cancel(pid, secret)) = serde_json::from_slice::<Frame>(&body) {
            let shared = shared.clone();
            tokio::spawn(async move {
                let limit = shared.config().general.cancel_wait_timeout;
                let _ = shared.cancels.cancel_local((pid, secret), limit, None).await;
            });
        }
    }
}
