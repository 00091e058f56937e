//! SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS: one row per connection with PgBouncer's
//! columns. Clients (console ones too) come from the client registry, servers from the server
//! registry, and a cancel being forwarded from the cancel list (a client row for the connection
//! that brought it, a server row for the one carrying it); `ptr` is the connection id in hex
//! (the number in `C-0x..` / `S-0x..` log lines) and `link` the ptr of the paired connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::table::{v, Table, Ty};
use crate::clients::{ClientInfo, ClientState};
use crate::clock::Micros;
use crate::logging::{ptr_text, NO_DB, NO_USER};
use crate::net::PeerAddr;
use crate::pool::IdleServer;
use crate::replication::Replication;
use crate::servers::Aside;
use crate::shared::Shared;

fn socket_cols(sockets: bool) -> Vec<(&'static str, Ty)> {
    let mut cols = vec![
        ("type", Ty::Text),
        ("user", Ty::Text),
        ("database", Ty::Text),
        ("replication", Ty::Text),
        ("state", Ty::Text),
        ("addr", Ty::Text),
        ("port", Ty::Int4),
        ("local_addr", Ty::Text),
        ("local_port", Ty::Int4),
        ("connect_time", Ty::Text),
        ("request_time", Ty::Text),
        ("wait", Ty::Int4),
        ("wait_us", Ty::Int4),
        ("close_needed", Ty::Int4),
        ("ptr", Ty::Text),
        ("link", Ty::Text),
        ("remote_pid", Ty::Int4),
        ("tls", Ty::Text),
        ("application_name", Ty::Text),
        ("prepared_statements", Ty::Int4),
        ("id", Ty::Int8),
    ];
    if sockets {
        for c in ["recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail", "send_avail"] {
            cols.push((c, Ty::Int4));
        }
    }
    cols
}

fn time_text(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm), UTC.
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// An address as PgBouncer prints it: a unix socket as `unix` with the port its path ends in
/// (`.s.PGSQL.<port>`), or `unix_port` when the path says none (a client's unnamed end).
fn addr_port(a: &PeerAddr, unix_port: u16) -> (Option<String>, Option<String>) {
    match a {
        PeerAddr::Tcp(s) => (v(s.ip()), v(s.port())),
        PeerAddr::Unix(path) => {
            let port = path.rsplit_once(".s.PGSQL.").and_then(|(_, p)| p.parse::<u16>().ok());
            (v("unix"), v(port.unwrap_or(unix_port)))
        }
    }
}

/// One connection's row, before it is turned into SHOW's values.
struct Row<'a> {
    server: bool,
    user: &'a str,
    db: &'a str,
    state: &'static str,
    /// The peer's address and port, as [`addr_port`] prints them.
    addr: (Option<String>, Option<String>),
    /// pgmux's own end.
    local: (Option<String>, Option<String>),
    connect_time: SystemTime,
    request_time: SystemTime,
    wait: Duration,
    close_needed: bool,
    id: u64,
    /// The paired connection's id.
    link: Option<u64>,
    remote_pid: i32,
    tls: &'a str,
    application_name: &'a str,
    replication: Replication,
    /// Named prepared statements (a client's own, those pgmux prepared on a server).
    prepared: u32,
}

impl Row<'_> {
    /// The values in [`socket_cols`] order; `sockets` adds SHOW SOCKETS' buffer columns.
    fn values(self, sockets: bool) -> Vec<Option<String>> {
        let mut r = vec![
            v(if self.server { "S" } else { "C" }),
            v(self.user),
            v(self.db),
            v(self.replication.as_str()),
            v(self.state),
            self.addr.0,
            self.addr.1,
            self.local.0,
            self.local.1,
            v(time_text(self.connect_time)),
            v(time_text(self.request_time.max(self.connect_time))),
            v(self.wait.as_secs()),
            v(self.wait.subsec_micros()),
            v(self.close_needed as i32),
            v(ptr_text(self.id)),
            v(self.link.map(ptr_text).unwrap_or_default()),
            v(self.remote_pid),
            v(self.tls),
            v(self.application_name),
            v(self.prepared),
            v(self.id),
        ];
        if sockets {
            r.extend(std::iter::repeat_n(v(0), 7));
        }
        r
    }
}

/// pgmux's end of a connection to `peer`: its TCP address, or the listener's unix socket.
fn local_end(local: Option<SocketAddr>, peer: &PeerAddr, listen_port: u16) -> (Option<String>, Option<String>) {
    match (local, peer) {
        (Some(a), _) => (v(a.ip()), v(a.port())),
        (None, PeerAddr::Unix(_)) => (v("unix"), v(listen_port)),
        (None, PeerAddr::Tcp(_)) => (None, None),
    }
}

/// Client rows, pool by pool (database, server-side user; the console's clients under
/// `pgbouncer`) as PgBouncer lists them: active and idle clients, then waiting ones, then the
/// connections that brought a cancel being forwarded (`active_cancel_req`), each by id.
/// `sockets` gives SHOW SOCKETS' state names and debug columns.
fn client_rows(shared: &Shared, sockets: bool, t: &mut Table) {
    let listen_port = shared.config().general.listen_port;
    let now_us = shared.client_registry.now_us();
    let mut rows: Vec<(Place<u8>, Vec<Option<String>>)> = Vec::new();
    for c in shared.client_registry.all() {
        let server_id = c.server_id.load(Relaxed);
        let req_us = c.request_time_us.load(Relaxed);
        // PgBouncer lists idle and active clients together ("active"), printed as "idle" when no
        // server is linked; SHOW SOCKETS prints the list's name.
        let state = match (c.state(), sockets) {
            (ClientState::Waiting, false) => "waiting",
            (ClientState::Waiting, true) => "cl_waiting",
            (_, true) => "cl_active",
            (_, false) if server_id == 0 => "idle",
            (_, false) => "active",
        };
        let row = Row {
            server: false,
            user: c.user(),
            db: c.db(),
            state,
            addr: addr_port(&c.addr, listen_port),
            // A unix client's own end is the listener's socket.
            local: local_end(c.local_addr, &c.addr, listen_port),
            connect_time: c.connect_time,
            request_time: if req_us == 0 { c.connect_time } else { shared.client_registry.wall_time(req_us) },
            wait: c.query_age(now_us),
            close_needed: c.close_needed(),
            id: c.id,
            link: (server_id != 0).then_some(server_id),
            // PgBouncer's remote_pid: the client's own process over a unix socket.
            remote_pid: c.peer_pid,
            tls: &c.tls,
            application_name: &c.application_name,
            replication: c.replication,
            prepared: c.prepared(),
        };
        let list = if c.state() == ClientState::Waiting { 1 } else { 0 };
        rows.push(((false, c.db().to_owned(), c.pool_user.to_string(), list, c.id), row.values(sockets)));
    }
    for c in shared.cancels.rows.all() {
        let Some(from) = &c.requester else { continue };
        let (db, user) = c.pool.as_ref().map_or((NO_DB, NO_USER), |(db, user)| (db.as_str(), user.as_str()));
        let row = Row {
            server: false,
            // A cancel request names no user (PgBouncer's `(nouser)`).
            user: NO_USER,
            db,
            state: if sockets { "cl_active_cancel_req" } else { "active_cancel_req" },
            addr: addr_port(&from.ends.peer, listen_port),
            local: local_end(from.ends.local, &from.ends.peer, listen_port),
            connect_time: from.connect_time,
            request_time: c.started,
            wait: Duration::ZERO,
            close_needed: false,
            id: from.id,
            link: Some(c.carrier_id),
            remote_pid: from.ends.peer_pid,
            tls: &from.tls,
            application_name: "",
            replication: Replication::None,
            prepared: 0,
        };
        rows.push(((c.pool.is_none(), db.to_owned(), user.to_owned(), 2, from.id), row.values(sockets)));
    }
    rows.sort_by(|(a, _), (b, _)| a.cmp(b));
    for (_, r) in rows {
        t.row(r);
    }
}

/// Server rows, pool by pool (database, user): active ones (linked to the client holding them),
/// then idle, then the rest ("used": checked or handed over, or idle past server_check_delay,
/// as PgBouncer's janitor moves them), then those their lease set aside ("tested": running the
/// reset query or the check query), those still logging in ("new"), the connections carrying
/// a cancel ("active_cancel"), and the servers with a cancel to them still in flight
/// ("being_canceled"). `request_time` is when the server last answered (its client's request,
/// or its release), `application_name` what it was set to.
fn server_rows(shared: &Shared, sockets: bool, t: &mut Table) {
    let listen_port = shared.config().general.listen_port;
    let now = Micros::now();
    let links: HashMap<u64, Arc<ClientInfo>> = shared
        .client_registry
        .all()
        .into_iter()
        .filter_map(|c| Some((c.server_id.load(Relaxed), c)).filter(|(s, _)| *s != 0))
        .collect();
    let mut idle: HashMap<u64, (IdleServer, bool)> = HashMap::new();
    for p in shared.pools.all() {
        let settings = p.settings();
        for s in p.idle_servers() {
            let used = settings.due_for_check(now.since(s.last_used));
            idle.insert(s.id, (s, used));
        }
    }
    let mut rows: Vec<(Place<ServerList>, Vec<Option<String>>)> = Vec::new();
    for s in shared.pools.servers.all() {
        let list = match (s.logging_in(), s.aside(), links.contains_key(&s.id), idle.get(&s.id)) {
            (true, ..) => ServerList::New,
            (_, Some(Aside::Tested), ..) => ServerList::Tested,
            (_, Some(Aside::BeingCanceled), ..) => ServerList::BeingCanceled,
            (_, None, true, _) => ServerList::Active,
            (_, None, false, Some((_, false))) => ServerList::Idle,
            _ => ServerList::Used,
        };
        // A server set aside is no client's any more (its client may still be leaving).
        let client = links.get(&s.id).filter(|_| list == ServerList::Active);
        let (request_time, application_name) = match (client, idle.get(&s.id)) {
            (Some(c), _) => {
                let us = c.request_time_us.load(Relaxed);
                let at = if us == 0 { s.connect_time } else { shared.client_registry.wall_time(us) };
                (at, &*c.application_name)
            }
            (None, Some((i, _))) => {
                (shared.client_registry.wall_time(i.last_used.as_u64()), i.application_name.as_str())
            }
            (None, None) => (s.connect_time, ""),
        };
        let row = Row {
            server: true,
            user: &s.user,
            db: &s.db,
            state: list.name(sockets),
            addr: addr_port(&s.addr, 0),
            local: local_end(s.local_addr(), &s.addr, listen_port),
            connect_time: s.connect_time,
            request_time,
            wait: Duration::ZERO,
            close_needed: false,
            id: s.id,
            link: client.map(|c| c.id),
            remote_pid: s.pid(),
            tls: s.tls(),
            application_name,
            replication: s.replication,
            prepared: s.prepared(),
        };
        rows.push(((false, s.db.clone(), s.user.clone(), list, s.id), row.values(sockets)));
    }
    for c in shared.cancels.rows.all() {
        let (db, user) = c.pool.as_ref().map_or((NO_DB, NO_USER), |(db, user)| (db.as_str(), user.as_str()));
        let row = Row {
            server: true,
            user,
            db,
            state: ServerList::ActiveCancel.name(sockets),
            addr: addr_port(&c.carrier_addr, 0),
            local: local_end(c.carrier_local(), &c.carrier_addr, listen_port),
            connect_time: c.started,
            request_time: c.started,
            wait: Duration::ZERO,
            close_needed: false,
            id: c.carrier_id,
            link: c.requester.as_ref().map(|r| r.id),
            remote_pid: 0,
            tls: "",
            application_name: "",
            replication: Replication::None,
            prepared: 0,
        };
        // A peer's cancels come after every pool, as PgBouncer lists its peer pools last.
        let place = (c.pool.is_none(), db.to_owned(), user.to_owned(), ServerList::ActiveCancel, c.carrier_id);
        rows.push((place, row.values(sockets)));
    }
    rows.sort_by(|(a, _), (b, _)| a.cmp(b));
    for (_, r) in rows {
        t.row(r);
    }
}

/// Where a row goes: a peer's after the pools, pool (database, server-side user), list, id.
type Place<L> = (bool, String, String, L, u64);

/// PgBouncer's lists of a pool's servers, in the order SHOW SERVERS prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ServerList {
    Active,
    Idle,
    Used,
    Tested,
    New,
    ActiveCancel,
    BeingCanceled,
}

impl ServerList {
    /// The state SHOW SERVERS prints, or with `sockets` SHOW SOCKETS' list name.
    fn name(self, sockets: bool) -> &'static str {
        match (self, sockets) {
            (ServerList::Active, false) => "active",
            (ServerList::Idle, false) => "idle",
            (ServerList::Used, false) => "used",
            (ServerList::Tested, false) => "tested",
            (ServerList::New, false) => "new",
            (ServerList::ActiveCancel, false) => "active_cancel",
            (ServerList::BeingCanceled, false) => "being_canceled",
            (ServerList::Active, true) => "sv_active",
            (ServerList::Idle, true) => "sv_idle",
            (ServerList::Used, true) => "sv_used",
            (ServerList::Tested, true) => "sv_tested",
            (ServerList::New, true) => "sv_login",
            // PgBouncer's SHOW SOCKETS leaves these out; pgmux lists every socket.
            (ServerList::ActiveCancel, true) => "sv_active_cancel",
            (ServerList::BeingCanceled, true) => "sv_being_canceled",
        }
    }
}

/// SHOW CLIENTS.
pub(super) fn clients(shared: &Shared) -> Table {
    let mut t = Table::new(&socket_cols(false));
    client_rows(shared, false, &mut t);
    t
}

/// SHOW SERVERS.
pub(super) fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(&socket_cols(false));
    server_rows(shared, false, &mut t);
    t
}

/// SHOW SOCKETS and SHOW ACTIVE_SOCKETS: clients, then servers, with the buffer columns.
pub(super) fn sockets(shared: &Shared) -> Table {
    let mut t = Table::new(&socket_cols(true));
    client_rows(shared, true, &mut t);
    server_rows(shared, true, &mut t);
    t
}
