//! The admin console on the virtual database `pgbouncer`: who may use it, the fake welcome, and
//! the simple-protocol command loop. SHOW output lives in `show`, control commands in `control`.

mod command;
mod control;
mod show;
mod show_sockets;
mod show_stats;
mod table;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use pgmux_protocol::build::{self, Severity};
use pgmux_protocol::{frontend, sqlstate, tags};

pub use command::{client_id, parse, Command, CommandError, ShutdownMode};
pub use show::{console_role, show, ADMIN_DB};
pub use table::Table;

use crate::clients::ClientInfo;
use crate::logging::ConnTag;
use crate::net::client_io::{ClientError, ClientIo};
use crate::shared::Shared;

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// admin_users: everything.
    Admin,
    /// stats_users: SHOW only (not FDS).
    Stats,
}

/// Counts admin console clients for SHOW POOLS / DATABASES and keeps the console client in the
/// client registry (SHOW CLIENTS, KILL_CLIENT) while it is connected.
struct AdminCount<'a>(&'a Shared, u64);

impl Drop for AdminCount<'_> {
    fn drop(&mut self) {
        let left = self.0.admin_clients.fetch_sub(1, Relaxed) - 1;
        self.0.client_registry.unregister(self.1);
        // As PgBouncer: a SUSPEND nobody is left to RESUME ends when the last console client
        // goes (a `psql -c SUSPEND` would otherwise leave the pooler deaf until a signal).
        if left == 0 && self.0.resume_if_suspended() {
            tracing::info!("admin disappeared when suspended, doing RESUME");
        }
    }
}

/// The welcome of the console: PgBouncer's fake server parameters, then the ones the client
/// set (`echoed`), a key, login_notify_message, ReadyForQuery.
pub fn welcome(out: &mut BytesMut, echoed: &[(&str, String)], notify: &str) {
    build::auth_ok(out);
    let version = format!("{}/bouncer", crate::PGBOUNCER_COMPAT_VERSION);
    for (k, v) in [
        ("server_version", version.as_str()),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "GMT"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "on"),
    ] {
        build::parameter_status(out, k.as_bytes(), v.as_bytes());
    }
    for (k, v) in echoed {
        build::parameter_status(out, k.as_bytes(), v.as_bytes());
    }
    build::backend_key_data(out, rand::random::<i32>() & i32::MAX, rand::random());
    if !notify.is_empty() {
        build::error_response(out, Severity::Notice, sqlstate::SUCCESSFUL_COMPLETION, notify);
    }
    build::ready_for_query(out, b'I');
}

/// Why a console client's connection ended, for its `closing because:` line.
#[derive(Debug)]
pub struct ConsoleEnd {
    /// PgBouncer's words.
    pub reason: String,
    /// True when the client was sent an error for it (a `pooler error:` line too).
    pub told: bool,
}

impl ConsoleEnd {
    fn left(reason: &str) -> Self {
        Self { reason: reason.to_owned(), told: false }
    }

    fn told(reason: &str) -> Self {
        Self { reason: reason.to_owned(), told: true }
    }
}

/// Serves a logged-in console client until it leaves or is killed (KILL_CLIENT); returns why
/// it ended (None: handed over to a new process, or SHUTDOWN, which log their own lines).
pub async fn serve(
    shared: Arc<Shared>,
    mut io: ClientIo,
    access: Access,
    listen_port: u16,
    info: Arc<ClientInfo>,
    tag: &ConnTag,
) -> Option<ConsoleEnd> {
    shared.admin_clients.fetch_add(1, Relaxed);
    let _count = AdminCount(&shared, info.id);
    let mut counted = false;
    loop {
        // read_frame is cancel-safe (bytes stay in io.rbuf), so a kill can interrupt the wait.
        let read = tokio::select! {
            r = io.read_frame() => Some(r),
            () = info.nudged(), if !info.is_killed() => None,
        };
        let frame = match read {
            _ if info.is_killed() => {
                io.fatal(sqlstate::PROTOCOL_VIOLATION, info.kill_reason()).await;
                return Some(ConsoleEnd::told(info.kill_reason()));
            }
            Some(Ok(f)) => f,
            Some(Err(_)) | None => return Some(ConsoleEnd::left("client unexpected eof")),
        };
        let mut out = BytesMut::new();
        match frame.tag {
            tags::frontend::TERMINATE => return Some(ConsoleEnd::left("client close request")),
            tags::frontend::QUERY => {
                // As PgBouncer's admin pool, whose query and transaction clocks start at the
                // first command and never stop: one query and one transaction per connection.
                if !std::mem::replace(&mut counted, true) {
                    crate::pool::PoolStats::add(&shared.admin_stats.query_count, 1);
                    crate::pool::PoolStats::add(&shared.admin_stats.xact_count, 1);
                }
                let sql = match frontend::query(frame.body()) {
                    Ok(q) => String::from_utf8_lossy(q).into_owned(),
                    Err(_) => {
                        io.fatal(sqlstate::PROTOCOL_VIOLATION, "incomplete query").await;
                        return Some(ConsoleEnd::told("incomplete query"));
                    }
                };
                if sql.trim().trim_end_matches(';').trim().eq_ignore_ascii_case(crate::takeover::COMMAND) {
                    match takeover_allowed(&shared, &info, &io, access) {
                        Ok(()) => {
                            let ClientIo { stream, .. } = io;
                            if let crate::net::Stream::Unix(sock) = stream {
                                crate::takeover::give::give(shared.clone(), sock).await;
                            }
                            return None;
                        }
                        Err(msg) => {
                            build::error_response(&mut out, Severity::Error, sqlstate::INSUFFICIENT_PRIVILEGE, msg);
                            build::ready_for_query(&mut out, b'I');
                            if io.send(&out).await.is_err() {
                                return Some(ConsoleEnd::left("client unexpected eof"));
                            }
                            continue;
                        }
                    }
                }
                let close = run(&shared, &sql, access, listen_port, &mut out).await;
                log_errors(&shared, tag, &out);
                if close {
                    let _ = io.send(&out).await;
                    return None;
                }
            }
            // As PgBouncer: COPY messages with no COPY under way are dropped unanswered.
            tags::frontend::COPY_DATA | tags::frontend::COPY_DONE | tags::frontend::COPY_FAIL => continue,
            other if !is_client_message(other) => {
                // Not a message a client sends at all: closed at once, as PgBouncer closes it.
                crate::conn_log!(error, tag, "unknown pkt from client: {other}/0x{other:x}");
                io.fatal(sqlstate::PROTOCOL_VIOLATION, "unknown pkt").await;
                return Some(ConsoleEnd::told("unknown pkt"));
            }
            other => {
                // As PgBouncer: the console speaks the simple protocol only, and a client that
                // sends anything else is told so and closed.
                let msg = match other {
                    tags::frontend::PARSE | tags::frontend::BIND | tags::frontend::EXECUTE => {
                        "extended query protocol not supported by admin console".to_owned()
                    }
                    _ => format!("unsupported packet type for admin console: {other}"),
                };
                // The error is a console error as any (its ReadyForQuery with it), then the end.
                build::error_response(&mut out, Severity::Error, sqlstate::PROTOCOL_VIOLATION, &msg);
                build::ready_for_query(&mut out, b'I');
                log_errors(&shared, tag, &out);
                build::error_response(&mut out, Severity::Fatal, sqlstate::PROTOCOL_VIOLATION, "bad packet");
                let _ = io.send(&out).await;
                return Some(ConsoleEnd::told("bad packet"));
            }
        }
        build::ready_for_query(&mut out, b'I');
        if io.send(&out).await.is_err() {
            return Some(ConsoleEnd::left("client unexpected eof"));
        }
    }
}

/// True for the message types a client sends once logged in (PgBouncer's handle_client_work
/// knows these; anything else is an `unknown pkt`).
fn is_client_message(t: u8) -> bool {
    use tags::frontend as f;
    [f::QUERY, f::FUNCTION_CALL, f::SYNC, f::FLUSH, f::PARSE, f::EXECUTE, f::CLOSE, f::BIND, f::DESCRIBE, f::TERMINATE]
        .contains(&t)
}

/// Logs the ERRORs of a console answer as PgBouncer's admin_error does: the message on an
/// ERROR line of its own, and `pooler error:` under the client's prefix (log_pooler_errors).
fn log_errors(shared: &Shared, tag: &ConnTag, out: &[u8]) {
    // Walked in place: a SHOW of many clients is megabytes, and only its errors matter.
    let mut at = 0;
    while let Some(head) = out.get(at..at + 5) {
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let Some(body) = out.get(at + 5..at + 1 + len) else { break };
        at += 1 + len;
        let e = pgmux_protocol::backend::ErrorFields::new(body);
        if head[0] != b'E' || e.field(b'S') != Some(b"ERROR") {
            continue;
        }
        let msg = e.message();
        tracing::error!("{msg}");
        if shared.config().general.log_pooler_errors {
            crate::conn_log!(warn, tag, "pooler error: {msg}");
        }
    }
}

/// Online restart is for `pgmux -R` only: user pgbouncer, over the unix socket, from the
/// process's own OS user (as PgBouncer's SHOW FDS passes sockets only then).
fn takeover_allowed(shared: &Shared, info: &ClientInfo, io: &ClientIo, access: Access) -> Result<(), &'static str> {
    if shared.state() != crate::shared::RunState::Running {
        return Err("TAKEOVER refused: the pooler is shutting down");
    }
    let same_uid = io.stream.peer_uid() == Some(nix::unistd::geteuid().as_raw());
    if access == Access::Admin
        && info.user() == ADMIN_DB
        && same_uid
        && matches!(io.stream, crate::net::Stream::Unix(_))
    {
        Ok(())
    } else {
        Err("TAKEOVER is for pgmux -R: user pgbouncer over the unix socket, as the same OS user")
    }
}

/// Runs one query; returns true when the connection should close afterwards (SHUTDOWN).
async fn run(shared: &Arc<Shared>, sql: &str, access: Access, listen_port: u16, out: &mut BytesMut) -> bool {
    let err =
        |out: &mut BytesMut, msg: &str| build::error_response(out, Severity::Error, sqlstate::PROTOCOL_VIOLATION, msg);
    let cmd = match parse(sql) {
        Ok(c) => c,
        Err(CommandError::Syntax) => {
            syntax_error(out, sql);
            return false;
        }
        Err(e) => {
            err(out, &e.to_string());
            return false;
        }
    };
    match cmd {
        Command::Empty => build::empty_query(out),
        Command::Show(what) => {
            if what == "help" {
                build::error_response_detail(out, Severity::Notice, "00000", "Console usage", Some(HELP));
                build::command_complete(out, "SHOW");
            } else if what == "fds" && access != Access::Admin {
                err(out, "admin access needed");
            } else if let Some(v) = faked_setting(&what) {
                let mut t = Table::text(&[faked_name(&what)]);
                t.row(vec![Some(v.to_owned())]);
                t.write(out, "SHOW");
            } else {
                match show(shared, &what, listen_port) {
                    Some(t) => t.write(out, "SHOW"),
                    None => syntax_error(out, sql),
                }
            }
        }
        Command::Set(k, _) if faked_setting(&k).is_some() => {
            build::error_response(out, Severity::Notice, "00000", "SET ignored");
            build::command_complete(out, "SET");
        }
        other => {
            if access != Access::Admin {
                err(out, "admin access needed");
                return false;
            }
            return control::run(shared, other, out).await;
        }
    }
    false
}

/// PgBouncer's answer to a query that is no command: the query itself, as its 1 KiB message
/// buffer holds it.
fn syntax_error(out: &mut BytesMut, sql: &str) {
    let mut msg = format!("invalid command '{sql}', use SHOW HELP;");
    if msg.len() > 1023 {
        let mut end = 1023;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
    }
    build::error_response(out, Severity::Error, sqlstate::PROTOCOL_VIOLATION, &msg);
}

/// Drivers SET and SHOW these on connect; the console pretends, with PgBouncer's values.
fn faked_setting(name: &str) -> Option<&'static str> {
    match name {
        "client_encoding" => Some("UTF-8"),
        "default_transaction_isolation" => Some("read committed"),
        "standard_conforming_strings" => Some("on"),
        "datestyle" => Some("ISO"),
        "timezone" => Some("GMT"),
        _ => None,
    }
}

fn faked_name(name: &str) -> &'static str {
    match name {
        "client_encoding" => "client_encoding",
        "default_transaction_isolation" => "default_transaction_isolation",
        "standard_conforming_strings" => "standard_conforming_strings",
        "datestyle" => "datestyle",
        _ => "timezone",
    }
}

/// SHOW HELP's DETAIL, PgBouncer's list of commands and pgmux's SWITCHOVER.
const HELP: &str = "
\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION
\tSHOW PEERS|PEER_POOLS
\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE
\tSHOW DNS_HOSTS|DNS_ZONES
\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS
\tSET key = arg
\tRELOAD
\tPAUSE [<db>]
\tRESUME [<db>]
\tDISABLE <db>
\tENABLE <db>
\tRECONNECT [<db>]
\tKILL [<db>]
\tKILL_CLIENT <client_id>
\tSUSPEND
\tSHUTDOWN
\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS
\tWAIT_CLOSE [<db>]
\tSWITCHOVER [<member>]";

/// Who may use the console without a password: everyone under auth_type=any, and the OS user
/// running pgmux connecting as `pgbouncer` over the unix socket.
pub fn passwordless(shared: &Shared, user: &str, peer_is_same_uid: bool) -> bool {
    shared.config().general.auth_type == crate::config::AuthType::Any || (user == ADMIN_DB && peer_is_same_uid)
}

/// The access of a console user who proved their password.
///
/// # Errors
/// Neither in admin_users nor in stats_users ("not allowed", as PgBouncer).
pub fn access_of(shared: &Shared, user: &str) -> Result<Access, ClientError> {
    match console_role(shared, user) {
        Some(true) => Ok(Access::Admin),
        Some(false) => Ok(Access::Stats),
        None => Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "not allowed".into())),
    }
}
