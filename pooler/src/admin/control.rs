//! Console commands that change things: PAUSE, RESUME, RECONNECT, KILL, KILL_CLIENT, DISABLE,
//! ENABLE, WAIT_CLOSE, RELOAD, SET, SUSPEND, SHUTDOWN, and pgmux's SWITCHOVER. Admin users only.

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

/// Waits until no client of these pools holds a server, and no server runs its reset.
async fn wait_released(pools: &[Arc<Pool>]) {
    while pools.iter().any(|p| p.servers_in_use() > 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when `db` is configured or has a pool; with `or_auto`, also when the `*` entry would
/// make it (PgBouncer's `find_or_register_database`, which PAUSE, KILL, RECONNECT, WAIT_CLOSE
/// and DISABLE use; RESUME and ENABLE look for an existing database only).
fn known_db(shared: &Shared, db: &str, or_auto: bool) -> bool {
    let c = shared.config();
    c.databases.contains_key(db)
        || (or_auto && c.database(db).is_some())
        || shared.pools.all().iter().any(|p| p.db == db)
        || shared.pools.is_paused_by_name(db)
        || shared.pools.is_disabled(db)
}

/// PgBouncer's `<COMMAND> [\'<arg>\'] command issued` log line.
fn log_issued(cmd: &Command) {
    let (word, arg) = match cmd {
        Command::Pause(d) => ("PAUSE", d.clone()),
        Command::Resume(d) => ("RESUME", d.clone()),
        Command::Reconnect(d) => ("RECONNECT", d.clone()),
        Command::Kill(d) => ("KILL", d.clone()),
        Command::WaitClose(d) => ("WAIT_CLOSE", d.clone()),
        Command::Disable(Some(d)) => ("DISABLE", Some(d.clone())),
        Command::Enable(Some(d)) => ("ENABLE", Some(d.clone())),
        Command::Suspend => ("SUSPEND", None),
        Command::Switchover(c) => ("SWITCHOVER", c.clone()),
        Command::Reload => ("RELOAD", None),
        Command::Shutdown(ShutdownMode::Immediate) => ("SHUTDOWN", None),
        Command::Shutdown(ShutdownMode::WaitForServers) => ("SHUTDOWN WAIT_FOR_SERVERS", None),
        Command::Shutdown(ShutdownMode::WaitForClients) => ("SHUTDOWN WAIT_FOR_CLIENTS", None),
        Command::KillClient(_)
        | Command::Disable(None)
        | Command::Enable(None)
        | Command::Set(..)
        | Command::Show(_)
        | Command::Empty => return,
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
    // PgBouncer's refusals, in its order: a global PAUSE or SUSPEND first, then a missing
    // database, the admin database itself, and a database that does not exist.
    // SHUTDOWN WAIT_FOR_SERVERS pauses too, as in PgBouncer.
    let paused_or_suspended =
        shared.is_suspended() || shared.pools.all_paused() || shared.state() == RunState::WaitForServers;
    match &cmd {
        Command::Kill(_) | Command::Pause(_) if paused_or_suspended => {
            err(out, "already suspended/paused".into());
            return false;
        }
        Command::Disable(None) | Command::Enable(None) => {
            err(out, "a database is required".into());
            return false;
        }
        _ => {}
    }
    let on_admin_db = match &cmd {
        Command::Kill(Some(d)) if d == ADMIN_DB => Some("cannot kill admin db"),
        Command::Pause(Some(d)) if d == ADMIN_DB => Some("cannot pause admin db"),
        Command::WaitClose(Some(d)) if d == ADMIN_DB => Some("cannot wait in admin db"),
        Command::Reconnect(Some(d)) if d == ADMIN_DB => Some("cannot reconnect admin db"),
        Command::Disable(Some(d)) if d == ADMIN_DB => Some("cannot disable admin db"),
        Command::Enable(Some(d)) if d == ADMIN_DB => Some("cannot enable admin db"),
        Command::Resume(Some(d)) if d == ADMIN_DB => {
            err(out, format!("database {ADMIN_DB} is not paused"));
            return false;
        }
        _ => None,
    };
    if let Some(what) = on_admin_db {
        err(out, format!("{what}: {ADMIN_DB}"));
        return false;
    }
    let db_arg = match &cmd {
        Command::Pause(d)
        | Command::Resume(d)
        | Command::Reconnect(d)
        | Command::Kill(d)
        | Command::WaitClose(d)
        | Command::Disable(d)
        | Command::Enable(d) => d.clone(),
        _ => None,
    };
    if let Some(d) = &db_arg {
        if !known_db(shared, d, !matches!(cmd, Command::Resume(_) | Command::Enable(_))) {
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
            match db {
                // As PgBouncer: a shutdown cannot be resumed out of.
                None if shared.state() != RunState::Running => {
                    err(out, "pooler is shutting down".into());
                    return false;
                }
                None if shared.is_suspended() => shared.set_suspended(false),
                None if shared.pools.all_paused() => shared.pools.set_paused(None, false),
                None => {
                    err(out, "pooler is not paused/suspended".into());
                    return false;
                }
                Some(d) if !shared.pools.is_paused_by_name(d) => {
                    err(out, format!("database {d} is not paused"));
                    return false;
                }
                Some(d) => shared.pools.set_paused(Some(d), false),
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
                    c.request_kill(crate::clients::KillReason::DatabaseRemoved);
                    killed.push(c.id);
                }
            }
            for p in &pools {
                p.reconnect();
            }
            shared.client_registry.wait_gone(&killed, KILL_WAIT).await;
            drop(pools);
            // The killed clients' tasks let go of their pools a moment after they leave.
            for _ in 0..50 {
                if shared.pools.forget_unused(db) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
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
            c.request_kill(crate::clients::KillReason::AdminForced);
            if !c.is_console() {
                // A console client (perhaps this one) notices between its commands.
                shared.client_registry.wait_gone(&[id], KILL_WAIT).await;
            }
            "KILL_CLIENT"
        }
        Command::Disable(_) => {
            shared.pools.set_disabled(db.unwrap_or_default(), true);
            "DISABLE"
        }
        Command::Enable(_) => {
            shared.pools.set_disabled(db.unwrap_or_default(), false);
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
        Command::Set(key, value) => {
            match crate::reload::set(shared, &key, &value) {
                Ok(crate::reload::SetOutcome::Applied) => {}
                Ok(crate::reload::SetOutcome::TlsNotApplied) => build::error_response(
                    out,
                    Severity::Notice,
                    sqlstate::CONFIG_FILE_ERROR,
                    "TLS settings could not be applied, still using old configuration",
                ),
                Err(e) => {
                    // PgBouncer's message; the reason, which PgBouncer only logs, as DETAIL too.
                    tracing::error!("SET {key}: {e}");
                    let reason = e.to_string();
                    build::error_response_detail(
                        out,
                        Severity::Error,
                        sqlstate::PROTOCOL_VIOLATION,
                        "SET failed",
                        Some(&reason),
                    );
                    return false;
                }
            }
            // As PgBouncer, the tag names what was set.
            build::command_complete(out, &format!("SET {key}={value}"));
            return false;
        }
        Command::Suspend => {
            if paused_or_suspended {
                err(out, "already suspended/paused".into());
                return false;
            }
            if shared.pools.any_paused_by_name() {
                err(out, "cannot suspend with paused databases".into());
                return false;
            }
            // No new connection is accepted and no transaction starts until RESUME (or until
            // the last console client leaves). PgBouncer answers once its socket buffers are
            // flushed; pgmux passes every message on as it comes, so it answers at once. A
            // transaction already under way runs on to its end rather than holding its locks
            // frozen (docs/OPERATIONS.md).
            shared.set_suspended(true);
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
