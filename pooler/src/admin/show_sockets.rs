//! SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS: one row per connection with PgBouncer's
//! columns. Clients (console ones too) come from the client registry, servers from the server
//! registry; `ptr` is the connection id in hex (the number in `C-0x..` / `S-0x..` log lines) and
//! `link` the ptr of the paired connection.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::table::{v, Table, Ty};
use crate::clients::{ClientInfo, ClientState};
use crate::clock::Micros;
use crate::logging::ptr_text;
use crate::net::PeerAddr;
use crate::pool::IdleServer;
use crate::servers::{Aside, ServerInfo};
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

/// Client rows: console clients (database `pgbouncer`) and pooled clients, by id. `sockets` gives
/// SHOW SOCKETS' state names and debug columns.
fn client_rows(shared: &Shared, sockets: bool, t: &mut Table) {
    let listen_port = shared.config().general.listen_port;
    let now_us = shared.client_registry.now_us();
    for c in shared.client_registry.all() {
        let (addr, port) = addr_port(&c.addr, listen_port);
        // A unix client's own end is the listener's socket.
        let (local_addr, local_port) = match (c.local_addr, &c.addr) {
            (Some(a), _) => (v(a.ip()), v(a.port())),
            (None, PeerAddr::Unix(_)) => (v("unix"), v(listen_port)),
            (None, PeerAddr::Tcp(_)) => (None, None),
        };
        let waited = c.waiting_for(now_us);
        let server_id = c.server_id.load(Relaxed);
        let req_us = c.request_time_us.load(Relaxed);
        let req = if req_us == 0 { c.connect_time } else { shared.client_registry.wall_time(req_us) };
        // PgBouncer lists idle and active clients together ("active"), printed as "idle" when no
        // server is linked; SHOW SOCKETS prints the list's name.
        let state = match (c.state(), sockets) {
            (ClientState::Waiting, false) => "waiting",
            (ClientState::Waiting, true) => "cl_waiting",
            (_, true) => "cl_active",
            (_, false) if server_id == 0 => "idle",
            (_, false) => "active",
        };
        let mut r = vec![
            v("C"),
            v(c.user()),
            v(c.db()),
            v("none"),
            v(state),
            addr,
            port,
            local_addr,
            local_port,
            v(time_text(c.connect_time)),
            v(time_text(req)),
            v(waited.as_secs()),
            v(waited.subsec_micros()),
            v(c.close_needed() as i32),
            v(ptr_text(c.id)),
            v(if server_id == 0 { String::new() } else { ptr_text(server_id) }),
            // PgBouncer's remote_pid: the client's own process over a unix socket.
            v(c.peer_pid),
            v(&c.tls),
            v(&c.application_name),
            v(0),
            v(c.id),
        ];
        if sockets {
            r.extend(std::iter::repeat_n(v(0), 7));
        }
        t.row(r);
    }
}

/// Server rows, pool by pool (database, user): active ones (linked to the client holding them),
/// then idle, then the rest ("used": checked or handed over, or idle past server_check_delay,
/// as PgBouncer's janitor moves them), then those their lease set aside ("tested": running the
/// reset query; "being_canceled": a cancel to them still in flight). `request_time` is when
/// the server last answered (its client's request, or its release), `application_name` what it
/// was set to.
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
    let mut servers: Vec<(u8, Arc<ServerInfo>)> = shared
        .pools
        .servers
        .all()
        .into_iter()
        .map(|s| {
            // In PgBouncer's order: active, idle, used, tested, being_canceled.
            let rank = match (s.aside(), links.contains_key(&s.id), idle.get(&s.id)) {
                (Some(Aside::Tested), ..) => 3,
                (Some(Aside::BeingCanceled), ..) => 4,
                (None, true, _) => 0,
                (None, false, Some((_, false))) => 1,
                _ => 2,
            };
            (rank, s)
        })
        .collect();
    servers.sort_by(|(ra, a), (rb, b)| (&a.db, &a.user, ra, a.id).cmp(&(&b.db, &b.user, rb, b.id)));
    for (rank, s) in servers {
        // A server set aside is no client's any more (its client may still be leaving).
        let client = links.get(&s.id).filter(|_| rank == 0);
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
        let state = match (rank, sockets) {
            (0, false) => "active",
            (1, false) => "idle",
            (3, false) => "tested",
            (4, false) => "being_canceled",
            (_, false) => "used",
            (0, true) => "sv_active",
            (1, true) => "sv_idle",
            (3, true) => "sv_tested",
            // PgBouncer's SHOW SOCKETS leaves these out; pgmux lists every socket.
            (4, true) => "sv_being_canceled",
            (_, true) => "sv_used",
        };
        let (addr, port) = addr_port(&s.addr, 0);
        let (local_addr, local_port) = match (s.local_addr, &s.addr) {
            (Some(a), _) => (v(a.ip()), v(a.port())),
            (None, PeerAddr::Unix(_)) => (v("unix"), v(listen_port)),
            (None, PeerAddr::Tcp(_)) => (None, None),
        };
        let mut r = vec![
            v("S"),
            v(&s.user),
            v(&s.db),
            v("none"),
            v(state),
            addr,
            port,
            local_addr,
            local_port,
            v(time_text(s.connect_time)),
            v(time_text(request_time.max(s.connect_time))),
            v(0),
            v(0),
            v(0),
            v(ptr_text(s.id)),
            v(client.map(|c| ptr_text(c.id)).unwrap_or_default()),
            v(s.pid),
            v(&s.tls),
            v(application_name),
            v(0),
            v(s.id),
        ];
        if sockets {
            r.extend(std::iter::repeat_n(v(0), 7));
        }
        t.row(r);
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
