//! SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS: one row per connection with PgBouncer's
//! columns; clients come from the client registry, servers from the pools and the clients
//! holding them.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use super::table::{v, Table, Ty};
use crate::net::PeerAddr;
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

fn addr_port(a: &PeerAddr) -> (Option<String>, Option<String>) {
    match a {
        PeerAddr::Tcp(s) => (v(s.ip()), v(s.port())),
        PeerAddr::Unix(_) => (v("unix"), v(0)),
    }
}

pub(super) fn clients(shared: &Shared, sockets: bool) -> Table {
    let mut t = Table::new(&socket_cols(sockets));
    for c in shared.client_registry.all() {
        let (addr, port) = addr_port(&c.addr);
        let pid = c.server_pid.load(Relaxed);
        let req_us = c.request_time_us.load(Relaxed);
        let req = if req_us == 0 { c.connect_time } else { UNIX_EPOCH + std::time::Duration::from_micros(req_us) };
        let mut r = vec![
            v("C"),
            v(&c.user),
            v(&c.db),
            v("none"),
            v(c.state().as_str()),
            addr,
            port,
            None,
            None,
            v(time_text(c.connect_time)),
            v(time_text(req)),
            v(0),
            v(0),
            v(0),
            v(format!("0x{:x}", c.id)),
            None,
            v(pid),
            Some(c.tls.clone()).filter(|t| !t.is_empty()),
            v(&c.application_name),
            v(0),
            v(c.id),
        ];
        if sockets {
            r.extend(std::iter::repeat_n(v(0), 7));
        }
        t.row(r);
    }
    t
}

pub(super) fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(&socket_cols(false));
    for c in shared.client_registry.all() {
        let pid = c.server_pid.load(Relaxed);
        if pid == 0 {
            continue;
        }
        t.row(vec![
            v("S"),
            v(&c.user),
            v(&c.db),
            v("none"),
            v("active"),
            None,
            None,
            None,
            None,
            None,
            None,
            v(0),
            v(0),
            v(0),
            None,
            v(format!("0x{:x}", c.id)),
            v(pid),
            Some(c.tls.clone()).filter(|t| !t.is_empty()),
            v(&c.application_name),
            v(0),
            None,
        ]);
    }
    for p in shared.pools.all() {
        for (pid, created, addr) in p.idle_servers() {
            let (a, port) = addr_port(&addr);
            t.row(vec![
                v("S"),
                v(&p.user),
                v(&p.db),
                v("none"),
                v("idle"),
                a,
                port,
                None,
                None,
                v(time_text(created)),
                None,
                v(0),
                v(0),
                v(0),
                None,
                None,
                v(pid),
                None,
                None,
                v(0),
                None,
            ]);
        }
    }
    t
}
