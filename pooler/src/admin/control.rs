//! Console commands that change things: PAUSE, RESUME, RECONNECT, KILL, KILL_CLIENT, DISABLE,
//! ENABLE, WAIT_CLOSE, RELOAD, SET, SUSPEND, SHUTDOWN, and pgmux's SWITCHOVER. Admin users only.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgmux_protocol::build::{self, Severity};
use pgmux_protocol::sqlstate;

use super::command::{Command, ShutdownMode};
use crate::config::ADMIN_DB;
use crate::pool::Pool;
use crate::shared::{RunState, Shared};

/// How long KILL and KILL_CLIENT wait for the killed clients to leave before answering.
const KILL_WAIT: Duration = Duration::from_secs(2);

fn pools_of(shared: &Shared, db: Option<&str>) -> Vec<Arc<Pool>> {
    shared.pools.all().into_iter().filter(|p| db.is_none_or(|d| p.db == d)).collect()
}

/// Waits until no client of these pools holds a server.
async fn wait_released(pools: &[Arc<Pool>]) {
    while pools.iter().any(|p| p.clients_active.load(Relaxed) > 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn known_db(shared: &Shared, db: &str) -> bool {
    let c = shared.config();
    c.databases.contains_key(db) || shared.pools.all().iter().any(|p| p.db == db)
}

/// PgBouncer's `<COMMAND> [\'<arg>\'] command issued` log line.
fn log_issued(cmd: &Command) {
    let (word, arg) = match cmd {
        Command::Pause(d) => ("PAUSE", d.clone()),
        Command::Resume(d) => ("RESUME", d.clone()),
        Command::Reconnect(d) => ("RECONNECT", d.clone()),
        Command::Kill(d) => ("KILL", d.clone()),
        Command::WaitClose(d) => ("WAIT_CLOSE", d.clone()),
        Command::Disable(d) => ("DISABLE", Some(d.clone())),
        Command::Enable(d) => ("ENABLE", Some(d.clone())),
        Command::Suspend => ("SUSPEND", None),
        Command::Switchover(c) => ("SWITCHOVER", c.clone()),
        Command::Reload => ("RELOAD", None),
        Command::Shutdown(ShutdownMode::Immediate) => ("SHUTDOWN", None),
        Command::Shutdown(ShutdownMode::WaitForServers) => ("SHUTDOWN WAIT_FOR_SERVERS", None),
        Command::Shutdown(ShutdownMode::WaitForClients) => ("SHUTDOWN WAIT_FOR_CLIENTS", None),
        Command::KillClient(_) | Command::Set(..) | Command::Show(_) | Command::Empty => return,
    };
    match arg {
        Some(a) => tracing::info!("{word} '{a}' command issued"),
        None => tracing::info!("{word} command issued"),
    }
}

/// Runs a control command; returns true when the console connection should close.
pub async fn run(shared: &Arc<Shared>, cmd: Command, out: &mut BytesMut) -> bool {
    log_issued(&cmd);
    let err = |out: &mut BytesMut, msg: String| {
        build::error_response(out, Severity::Error, sqlstate::PROTOCOL_VIOLATION, &msg)
    };
    // PgBouncer's refusals for the admin database itself.
    let on_admin_db = match &cmd {
        Command::Kill(Some(d)) if d == ADMIN_DB => Some("cannot kill admin db"),
        Command::Pause(Some(d)) if d == ADMIN_DB => Some("cannot pause admin db"),
        Command::WaitClose(Some(d)) if d == ADMIN_DB => Some("cannot wait in admin db"),
        _ => None,
    };
    if matches!(cmd, Command::Kill(_)) && (shared.is_suspended() || shared.pools.all_paused()) {
        err(out, "already suspended/paused".into());
        return false;
    }
    if let Some(what) = on_admin_db {
        err(out, format!("{what}: {ADMIN_DB}"));
        return false;
    }
    let db_arg = match &cmd {
        Command::Pause(d) | Command::Resume(d) | Command::Reconnect(d) | Command::Kill(d) | Command::WaitClose(d) => {
            d.clone()
        }
        Command::Disable(d) | Command::Enable(d) => Some(d.clone()),
        _ => None,
    };
    if let Some(d) = &db_arg {
        if !known_db(shared, d) {
            err(out, format!("no such database: {d}"));
            return false;
        }
    }
    let db = db_arg.as_deref();
    let tag = match cmd {
        Command::Pause(_) => {
            shared.pools.set_paused(db, true);
            // Transactions in flight finish; new ones wait until RESUME.
            wait_released(&pools_of(shared, db)).await;
            "PAUSE"
        }
        Command::Resume(_) => {
            if db.is_none() && shared.state() != RunState::Running {
                // As PgBouncer: a shutdown cannot be resumed out of.
                err(out, "pooler is shutting down".into());
                return false;
            }
            if db.is_none() && shared.is_suspended() {
                shared.set_suspended(false);
            } else {
                shared.pools.set_paused(db, false);
            }
            "RESUME"
        }
        Command::Reconnect(_) => {
            let fast_close = shared.config().general.server_fast_close;
            for p in pools_of(shared, db) {
                p.reconnect();
                if fast_close {
                    shared.client_registry.fast_close(&p.db, &p.user);
                }
            }
            "RECONNECT"
        }
        Command::Kill(_) => {
            // As PgBouncer: each database with a pool (or the one named) is paused, its clients
            // are closed with `database removed` and its servers closed. The reply comes once
            // the clients are gone, so a SHOW CLIENTS that follows no longer lists them.
            let pools = pools_of(shared, db);
            let mut dbs: Vec<&str> = pools.iter().map(|p| p.db.as_str()).chain(db).collect();
            dbs.sort_unstable();
            dbs.dedup();
            for d in dbs {
                shared.pools.set_paused(Some(d), true);
            }
            let mut killed = Vec::new();
            for c in shared.client_registry.all() {
                if !c.is_console() && db.is_none_or(|d| c.db() == d) {
                    c.request_kill("database removed");
                    killed.push(c.id);
                }
            }
            for p in &pools {
                p.reconnect();
            }
            shared.client_registry.wait_gone(&killed, KILL_WAIT).await;
            "KILL"
        }
        Command::KillClient(arg) => {
            let Some(id) = super::command::client_id(&arg) else {
                err(out, "invalid client pointer supplied".into());
                return false;
            };
            let Some(c) = shared.client_registry.get(id) else {
                err(out, "client not found".into());
                return false;
            };
            c.request_kill("admin forced disconnect");
            if !c.is_console() {
                // A console client (perhaps this one) notices between its commands.
                shared.client_registry.wait_gone(&[id], KILL_WAIT).await;
            }
            "KILL_CLIENT"
        }
        Command::Disable(d) => {
            shared.pools.set_disabled(&d, true);
            "DISABLE"
        }
        Command::Enable(d) => {
            shared.pools.set_disabled(&d, false);
            "ENABLE"
        }
        Command::WaitClose(_) => {
            wait_released(&pools_of(shared, db)).await;
            "WAIT_CLOSE"
        }
        Command::Switchover(candidate) => match crate::leader::switchover::run(shared, candidate.as_deref()).await {
            Ok(done) => {
                let mut t = super::table::Table::new(&[
                    ("old_leader", super::table::Ty::Text),
                    ("new_leader", super::table::Ty::Text),
                    ("held_ms", super::table::Ty::Int8),
                    ("total_ms", super::table::Ty::Int8),
                ]);
                t.row(vec![
                    Some(done.from),
                    Some(done.to),
                    Some(done.held.as_millis().to_string()),
                    Some(done.total.as_millis().to_string()),
                ]);
                t.write(out, "SWITCHOVER");
                return false;
            }
            Err(e) => {
                err(out, format!("SWITCHOVER failed: {e}"));
                return false;
            }
        },
        Command::Reload => match crate::reload::reload(shared) {
            Ok(()) => "RELOAD",
            Err(e) => {
                // As PgBouncer: the reason goes to the log, the console gets F0000. The old
                // configuration stays in force. A TLS failure was logged where it happened.
                if let crate::reload::ReloadError::Config(e) = e {
                    tracing::error!("{e}");
                }
                tracing::error!("RELOAD Failed, see logs for more details");
                build::error_response(
                    out,
                    Severity::Error,
                    sqlstate::CONFIG_FILE_ERROR,
                    "RELOAD failed, see logs for additional details",
                );
                return false;
            }
        },
        Command::Set(key, value) => match crate::reload::set(shared, &key, &value) {
            Ok(crate::reload::SetOutcome::Applied) => "SET",
            Ok(crate::reload::SetOutcome::TlsNotApplied) => {
                build::error_response(
                    out,
                    Severity::Notice,
                    sqlstate::CONFIG_FILE_ERROR,
                    "TLS settings could not be applied, still using old configuration",
                );
                "SET"
            }
            Err(e) => {
                err(out, e.to_string());
                return false;
            }
        },
        Command::Suspend => {
            if shared.is_suspended() {
                err(out, "already suspended".into());
                return false;
            }
            // No new connections, no new transactions; returns once every server is released.
            // Clients still holding one after suspend_timeout are closed, as PgBouncer drops
            // the connections it cannot flush in that time.
            shared.set_suspended(true);
            let pools = pools_of(shared, None);
            let limit = shared.config().general.suspend_timeout;
            if limit.is_zero() {
                wait_released(&pools).await;
            } else if tokio::time::timeout(limit, wait_released(&pools)).await.is_err() {
                for c in shared.client_registry.all() {
                    if !c.is_console() && c.state() == crate::clients::ClientState::Active {
                        c.request_kill("suspend_timeout");
                    }
                }
                wait_released(&pools).await;
            }
            "SUSPEND"
        }
        Command::Shutdown(mode) => {
            let state = match mode {
                ShutdownMode::Immediate => RunState::Immediate,
                ShutdownMode::WaitForServers => RunState::WaitForServers,
                ShutdownMode::WaitForClients => RunState::WaitForClients,
            };
            shared.set_state(state);
            if mode == ShutdownMode::Immediate {
                return true;
            }
            "SHUTDOWN"
        }
        Command::Show(_) | Command::Empty => unreachable!("handled by the console"),
    };
    build::command_complete(out, tag);
    false
}
