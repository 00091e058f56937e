//! Which connection a log line is about, in PgBouncer's words: `C-0x1a: p0/alice@127.0.0.1:41234`
//! for a client, `S-0x2b: p0/alice@127.0.0.1:5432` for a server. The hex number is the
//! connection's `id` in SHOW CLIENTS / SERVERS / SOCKETS (and its `ptr`), so a line can be
//! matched with a row.

use crate::net::PeerAddr;

/// Client or server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A client of pgmux (`C-`).
    Client,
    /// A connection to PostgreSQL (`S-`).
    Server,
}

/// PgBouncer's name for the user of a connection that has none (a client until its startup
/// packet names one, a cancel request).
pub const NO_USER: &str = "(nouser)";
/// PgBouncer's name for the database of a connection that has none.
pub const NO_DB: &str = "(nodb)";

/// The log prefix of one connection. Cheap to keep: built once per connection, updated when the
/// client names its database and user. Its texts are `Box<str>`, 8 bytes smaller than `String`
/// each, in every client's registry entry.
#[derive(Debug, Clone)]
pub struct ConnTag {
    /// Client or server.
    pub side: Side,
    /// The connection's id (SHOW ... `id`).
    pub id: u64,
    /// Database, `(nodb)` until known.
    pub db: Box<str>,
    /// User, `(nouser)` until known.
    pub user: Box<str>,
    /// `ip:port`, `[ipv6]:port`, `unix(pid):port` or `unix:port`.
    pub addr: Box<str>,
}

impl ConnTag {
    /// A client that has just connected; `port` is used for unix-socket peers (the listen port,
    /// as PgBouncer prints it).
    pub fn client(id: u64, peer: &PeerAddr, port: u16) -> Self {
        ConnTag { side: Side::Client, id, db: NO_DB.into(), user: NO_USER.into(), addr: addr_text(peer, port).into() }
    }

    /// A server connection of pool (db, user).
    pub fn server(id: u64, db: &str, user: &str, peer: &PeerAddr, port: u16) -> Self {
        ConnTag { side: Side::Server, id, db: db.into(), user: user.into(), addr: addr_text(peer, port).into() }
    }

    /// A server connection about to be opened to `host` (a name, an IP or a unix socket
    /// directory); [`ConnTag::server`] replaces it once the address is known.
    pub fn server_to(id: u64, db: &str, user: &str, host: &str, port: u16) -> Self {
        let addr = if host.starts_with('/') || host.is_empty() {
            format!("unix:{port}")
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        ConnTag { side: Side::Server, id, db: db.into(), user: user.into(), addr: addr.into() }
    }

    /// The client named its database and user.
    pub fn set_login(&mut self, db: &str, user: &str) {
        self.db = db.into();
        self.user = user.into();
    }

    /// `C-0x1a` / `S-0x2b`.
    pub fn conn_id(&self) -> String {
        let c = match self.side {
            Side::Client => 'C',
            Side::Server => 'S',
        };
        format!("{c}-{}", ptr_text(self.id))
    }
}

/// The `ptr` / `link` column text of a connection id (`0x1a`).
pub fn ptr_text(id: u64) -> String {
    format!("0x{id:x}")
}

/// PgBouncer's address text: IPv6 in brackets, unix peers as `unix` or `unix(pid)` with a port.
fn addr_text(peer: &PeerAddr, port: u16) -> String {
    match peer {
        PeerAddr::Tcp(a) if a.is_ipv6() => format!("[{}]:{}", a.ip(), a.port()),
        PeerAddr::Tcp(std::net::SocketAddr::V4(a)) => {
            // Written out by hand: this runs at every login, and the formatting machinery
            // took 1,700 instructions for it.
            let mut s = String::with_capacity(21);
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                push_decimal(&mut s, octet.into());
            }
            s.push(':');
            push_decimal(&mut s, a.port().into());
            s
        }
        PeerAddr::Tcp(a) => format!("{}:{}", a.ip(), a.port()),
        PeerAddr::Unix(label) if label.starts_with("unix(") => format!("{label}:{port}"),
        PeerAddr::Unix(_) => format!("unix:{port}"),
    }
}

/// Appends `n` in decimal.
fn push_decimal(s: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        s.push(char::from(d));
    }
}

/// Logs an event about one connection with PgBouncer's prefix:
/// `conn_log!(info, tag, "login attempt: db={} ...", db)`. `tag` is a [`ConnTag`].
#[macro_export]
macro_rules! conn_log {
    ($level:ident, $tag:expr, $($arg:tt)+) => {{
        let tag: &$crate::logging::ConnTag = &$tag;
        tracing::$level!(conn = %tag.conn_id(), db = %tag.db, user = %tag.user, addr = %tag.addr, $($arg)+)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_written_by_hand_matches_the_standard_formatting() {
        for text in ["0.0.0.0:0", "255.255.255.255:65535", "10.0.100.9:6432", "192.168.1.10:5"] {
            let a: std::net::SocketAddr = text.parse().unwrap();
            assert_eq!(addr_text(&PeerAddr::Tcp(a), 1), format!("{}:{}", a.ip(), a.port()));
        }
    }

    #[test]
    fn addresses_are_written_as_pgbouncer_writes_them() {
        let v4 = PeerAddr::Tcp("127.0.0.1:41234".parse().unwrap());
        let v6 = PeerAddr::Tcp("[::1]:41234".parse().unwrap());
        let mut c = ConnTag::client(26, &v4, 6432);
        assert_eq!((c.conn_id().as_str(), &*c.addr, &*c.db), ("C-0x1a", "127.0.0.1:41234", "(nodb)"));
        c.set_login("p0", "alice");
        assert_eq!((&*c.db, &*c.user), ("p0", "alice"));
        assert_eq!(&*ConnTag::client(1, &v6, 6432).addr, "[::1]:41234");
        assert_eq!(&*ConnTag::client(1, &PeerAddr::Unix("unix(77)".into()), 6432).addr, "unix(77):6432");
        let s = ConnTag::server(43, "p0", "alice", &PeerAddr::Unix("/tmp/.s.PGSQL.5432".into()), 5432);
        assert_eq!((s.conn_id().as_str(), &*s.addr), ("S-0x2b", "unix:5432"));
    }
}
