//! auth_hba_file: PgBouncer's subset of pg_hba.conf. Connection types `local`, `host`,
//! `hostssl`, `hostnossl`; databases `all`, `sameuser`, `replication`, `@file` and lists; users
//! `all`, `@file` and lists; addresses `all` and IPv4/IPv6 CIDR (or address plus mask); methods
//! trust, reject, peer, password, md5, scram-sha-256 and cert, with `map=` for peer and cert.
//! The first line that matches decides; no match means the login is rejected.

use std::net::IpAddr;
use std::path::Path;

use crate::config::{AuthType, BadValue};

/// One word of a line; quoted words are never keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The text, without quotes.
    pub text: String,
    /// It was written in double quotes.
    pub quoted: bool,
}

/// Splits a line into fields; a field is a comma-separated list of tokens.
pub fn fields(line: &str) -> Vec<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => return out,
            _ => {}
        }
        let mut field = Vec::new();
        loop {
            let mut text = String::new();
            let mut quoted = false;
            if chars.peek() == Some(&'"') {
                quoted = true;
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            text.push('"');
                        } else {
                            break;
                        }
                    } else {
                        text.push(c);
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == ',' || c == '#' {
                        break;
                    }
                    text.push(c);
                    chars.next();
                }
            }
            field.push(Token { text, quoted });
            // A comma continues the list, with blanks allowed on either side (`a , b`), as
            // PgBouncer's tokenizer reads it.
            let mut ahead = chars.clone();
            while ahead.peek().is_some_and(|c| c.is_whitespace()) {
                ahead.next();
            }
            if ahead.peek() == Some(&',') {
                chars = ahead;
                chars.next();
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                continue;
            }
            break;
        }
        out.push(field);
    }
}

/// All tokens of a line, lists flattened.
pub fn tokens(line: &str) -> Vec<Token> {
    fields(line).into_iter().flatten().collect()
}

/// How a client is connected, as HBA lines see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// Unix socket.
    Local,
    /// TCP from this address, with or without TLS.
    Host {
        /// Client address.
        addr: IpAddr,
        /// The connection is TLS.
        tls: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineType {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    All,
    SameUser,
    Replication,
    Literal(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    All,
    Net(IpAddr, u8),
}

/// One line of the file.
#[derive(Debug, Clone)]
pub struct Rule {
    kind: LineType,
    databases: Vec<Name>,
    users: Vec<Name>,
    address: Address,
    /// The method it names.
    pub method: AuthType,
    /// `map=` option (ident map for peer and cert).
    pub map: Option<String>,
    /// `file:line`, for logs.
    pub at: String,
}

/// A parsed HBA file.
#[derive(Debug, Clone, Default)]
pub struct Hba {
    rules: Vec<Rule>,
}

fn names(field: &[Token], dir: &Path, at: &str, databases: bool) -> Result<Vec<Name>, BadValue> {
    let mut out = Vec::new();
    for t in field {
        if t.quoted {
            out.push(Name::Literal(t.text.clone()));
            continue;
        }
        match t.text.as_str() {
            "all" => out.push(Name::All),
            "sameuser" if databases => out.push(Name::SameUser),
            "replication" if databases => out.push(Name::Replication),
            "samerole" | "samegroup" if databases => {
                return Err(BadValue(format!("{at}: {} is not supported", t.text)));
            }
            s if s.starts_with('+') && !databases => {
                return Err(BadValue(format!("{at}: group membership (+) is not supported")))
            }
            s if s.starts_with('/') => return Err(BadValue(format!("{at}: regular expressions are not supported"))),
            s if s.starts_with('@') => {
                let path = dir.join(&s[1..]);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| BadValue(format!("{at}: could not read {}: {e}", path.display())))?;
                for line in text.lines() {
                    out.extend(tokens(line).into_iter().map(|t| Name::Literal(t.text)));
                }
            }
            s => out.push(Name::Literal(s.to_owned())),
        }
    }
    Ok(out)
}

fn address(field: &[Token], mask: Option<&[Token]>, at: &str) -> Result<(Address, bool), BadValue> {
    let [t] = field else { return Err(BadValue(format!("{at}: one address expected"))) };
    match t.text.as_str() {
        "all" => return Ok((Address::All, false)),
        "samehost" | "samenet" => return Err(BadValue(format!("{at}: {} is not supported", t.text))),
        _ => {}
    }
    let bad = || BadValue(format!("{at}: invalid address \"{}\" (IPv4 or IPv6 CIDR, or all)", t.text));
    if let Some((ip, bits)) = t.text.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let bits: u8 = bits.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if bits > max {
            return Err(bad());
        }
        return Ok((Address::Net(ip, bits), false));
    }
    let ip: IpAddr = t.text.parse().map_err(|_| bad())?;
    let Some([m]) = mask else { return Err(BadValue(format!("{at}: address {ip} needs a /prefix or a mask"))) };
    let mask: IpAddr = m.text.parse().map_err(|_| BadValue(format!("{at}: invalid mask \"{}\"", m.text)))?;
    let bits = match (ip, mask) {
        (IpAddr::V4(_), IpAddr::V4(m)) => prefix_len(&m.octets()),
        (IpAddr::V6(_), IpAddr::V6(m)) => prefix_len(&m.octets()),
        _ => None,
    }
    .ok_or_else(|| BadValue(format!("{at}: invalid mask \"{}\"", m.text)))?;
    Ok((Address::Net(ip, bits), true))
}

/// The prefix length of a contiguous netmask.
fn prefix_len(octets: &[u8]) -> Option<u8> {
    let bits: u32 = octets.iter().map(|o| o.count_ones()).sum();
    let ones = octets.iter().flat_map(|o| (0..8).rev().map(move |i| o >> i & 1 == 1));
    let contiguous = ones.skip(bits as usize).all(|b| !b);
    contiguous.then_some(bits as u8)
}

fn in_net(addr: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, n): (Vec<u8>, Vec<u8>) = match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (a.octets().to_vec(), n.octets().to_vec()),
        (IpAddr::V6(a), IpAddr::V6(n)) => (a.octets().to_vec(), n.octets().to_vec()),
        (IpAddr::V6(a), IpAddr::V4(n)) => match a.to_ipv4_mapped() {
            Some(a) => (a.octets().to_vec(), n.octets().to_vec()),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    let mut left = bits as usize;
    for (x, y) in a.iter().zip(n.iter()) {
        let take = left.min(8);
        if take == 0 {
            break;
        }
        let mask = (0xffu16 << (8 - take)) as u8;
        if x & mask != y & mask {
            return false;
        }
        left -= take;
    }
    true
}

impl Hba {
    /// Reads and parses `path`; `@file` names are taken relative to its directory.
    ///
    /// # Errors
    /// Unreadable files, and lines PgBouncer's subset does not have (`file:line: reason`).
    pub fn load(path: &Path) -> Result<Self, BadValue> {
        let text =
            std::fs::read_to_string(path).map_err(|e| BadValue(format!("could not read {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), dir)
    }

    /// Parses HBA text.
    ///
    /// # Errors
    /// See [`Hba::load`].
    pub fn parse(text: &str, name: &str, dir: &Path) -> Result<Self, BadValue> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let f = fields(line);
            if f.is_empty() {
                continue;
            }
            let at = format!("{name}:{}", i + 1);
            let kind = match f[0].first().map(|t| t.text.as_str()) {
                Some("local") => LineType::Local,
                Some("host") => LineType::Host,
                Some("hostssl") => LineType::HostSsl,
                Some("hostnossl") => LineType::HostNoSsl,
                Some(other) => {
                    return Err(BadValue(format!(
                        "{at}: invalid connection type \"{other}\" (local, host, hostssl, hostnossl)"
                    )))
                }
                None => continue,
            };
            let need = if kind == LineType::Local { 4 } else { 5 };
            if f.len() < need {
                return Err(BadValue(format!("{at}: too few fields")));
            }
            let databases = names(&f[1], dir, &at, true)?;
            let users = names(&f[2], dir, &at, false)?;
            let (address, rest) = if kind == LineType::Local {
                (Address::All, 3)
            } else {
                let (a, used_mask) = address(&f[3], f.get(4).map(Vec::as_slice), &at)?;
                (a, if used_mask { 5 } else { 4 })
            };
            let method_field = f.get(rest).ok_or_else(|| BadValue(format!("{at}: no authentication method")))?;
            let method =
                AuthType::parse_method(&method_field[0].text, true).map_err(|e| BadValue(format!("{at}: {e}")))?;
            let mut map = None;
            for opt in f[rest + 1..].iter().flatten() {
                match opt.text.split_once('=') {
                    Some(("map", m)) => map = Some(m.to_owned()),
                    _ => return Err(BadValue(format!("{at}: unsupported option \"{}\" (only map= is)", opt.text))),
                }
            }
            if map.is_some() && !matches!(method, AuthType::Peer | AuthType::Cert) {
                return Err(BadValue(format!("{at}: map= is only for peer and cert")));
            }
            if kind == LineType::Local && method == AuthType::Cert {
                return Err(BadValue(format!("{at}: cert needs a TLS connection (hostssl)")));
            }
            if kind != LineType::Local && method == AuthType::Peer {
                return Err(BadValue(format!("{at}: peer is only for local connections")));
            }
            rules.push(Rule { kind, databases, users, address, method, map, at });
        }
        Ok(Self { rules })
    }

    /// The first rule that matches, or `None` (the login is rejected). A physical replication
    /// connection matches only lines whose database field says `replication`, as in PgBouncer
    /// and PostgreSQL; a logical one matches by database name like any other.
    pub fn find(&self, conn: ConnKind, database: &str, user: &str, physical: bool) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            let kind_ok = match (r.kind, conn) {
                (LineType::Local, ConnKind::Local) => true,
                (LineType::Host, ConnKind::Host { .. }) => true,
                (LineType::HostSsl, ConnKind::Host { tls, .. }) => tls,
                (LineType::HostNoSsl, ConnKind::Host { tls, .. }) => !tls,
                _ => false,
            };
            let addr_ok = match (&r.address, conn) {
                (Address::All, _) => true,
                (Address::Net(net, bits), ConnKind::Host { addr, .. }) => in_net(addr, *net, *bits),
                (Address::Net(..), ConnKind::Local) => false,
            };
            let db_ok = r.databases.iter().any(|n| match n {
                Name::Replication => physical,
                _ if physical => false,
                Name::All => true,
                Name::SameUser => database == user,
                Name::Literal(d) => d == database,
            });
            let user_ok = r.users.iter().any(|n| match n {
                Name::All => true,
                Name::Literal(u) => u == user,
                Name::SameUser | Name::Replication => false,
            });
            kind_ok && addr_ok && db_ok && user_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(a: &str, tls: bool) -> ConnKind {
        ConnKind::Host { addr: a.parse().unwrap(), tls }
    }

    fn method(h: &Hba, c: ConnKind, db: &str, user: &str) -> Option<AuthType> {
        h.find(c, db, user, false).map(|r| r.method)
    }

    #[test]
    fn first_match_wins() {
        let text = "\
# Pigsty-style rules
local    pgbouncer  postgres                   peer map=ops
local    all        all                        scram-sha-256
host     all        all      10.1.0.0/16       reject
hostssl  all        \"all\"    0.0.0.0/0         cert
host     all        all      0.0.0.0/0         md5
host     sameuser   all      ::1/128           trust
host     db1,db2    a, b     127.0.0.1 255.255.255.255  password
";
        let h = Hba::parse(text, "hba", Path::new(".")).unwrap();
        assert_eq!(method(&h, ConnKind::Local, "pgbouncer", "postgres"), Some(AuthType::Peer));
        assert_eq!(h.find(ConnKind::Local, "pgbouncer", "postgres", false).unwrap().map.as_deref(), Some("ops"));
        assert_eq!(method(&h, ConnKind::Local, "app", "x"), Some(AuthType::ScramSha256));
        assert_eq!(method(&h, host("10.1.2.3", true), "app", "x"), Some(AuthType::Reject));
        // "all" in quotes is a user called all.
        assert_eq!(method(&h, host("10.2.0.1", true), "app", "x"), Some(AuthType::Md5));
        assert_eq!(method(&h, host("10.2.0.1", true), "app", "all"), Some(AuthType::Cert));
        assert_eq!(method(&h, host("::1", false), "u", "u"), Some(AuthType::Trust));
        let only_v6 = Hba::parse("host sameuser all ::1/128 trust\n", "h", Path::new(".")).unwrap();
        assert_eq!(method(&only_v6, host("::1", false), "u", "u"), Some(AuthType::Trust));
        assert_eq!(method(&only_v6, host("::1", false), "d", "u"), None);
        assert_eq!(method(&only_v6, host("127.0.0.1", false), "u", "u"), None);
        let lists = Hba::parse("host db1,db2 a, b 127.0.0.1 255.255.255.255 password\n", "h", Path::new(".")).unwrap();
        let spaced = Hba::parse("host tmp1,all user1,user2 , user3 16.0.0.0/8 md5\n", "h", Path::new(".")).unwrap();
        assert!(spaced
            .find(ConnKind::Host { addr: "16.1.2.3".parse().unwrap(), tls: false }, "x", "user3", false)
            .is_some());
        // Physical replication matches only the `replication` keyword.
        let rep = Hba::parse("local replication all trust\nlocal all all reject\n", "h", Path::new(".")).unwrap();
        assert_eq!(rep.find(ConnKind::Local, "app", "u", true).unwrap().method, AuthType::Trust);
        assert_eq!(rep.find(ConnKind::Local, "replication", "u", false).unwrap().method, AuthType::Reject);
        assert_eq!(method(&lists, host("127.0.0.1", false), "db2", "b"), Some(AuthType::Plain));
        assert_eq!(method(&lists, host("127.0.0.2", false), "db2", "b"), None);
        assert_eq!(method(&lists, host("127.0.0.1", false), "db3", "b"), None);
    }

    #[test]
    fn hostssl_and_hostnossl_follow_tls() {
        let h = Hba::parse("hostnossl all all all reject\nhostssl all all all trust\n", "h", Path::new(".")).unwrap();
        assert_eq!(method(&h, host("1.2.3.4", false), "d", "u"), Some(AuthType::Reject));
        assert_eq!(method(&h, host("1.2.3.4", true), "d", "u"), Some(AuthType::Trust));
        assert_eq!(method(&h, ConnKind::Local, "d", "u"), None);
    }

    #[test]
    fn cidr_edges() {
        assert!(in_net("192.168.1.77".parse().unwrap(), "192.168.1.0".parse().unwrap(), 24));
        assert!(!in_net("192.168.2.1".parse().unwrap(), "192.168.1.0".parse().unwrap(), 24));
        assert!(in_net("10.0.0.1".parse().unwrap(), "0.0.0.0".parse().unwrap(), 0));
        assert!(in_net("10.0.0.9".parse().unwrap(), "10.0.0.8".parse().unwrap(), 29));
        assert!(!in_net("10.0.0.16".parse().unwrap(), "10.0.0.8".parse().unwrap(), 29));
        assert!(in_net("::ffff:10.0.0.1".parse().unwrap(), "10.0.0.0".parse().unwrap(), 8));
        assert!(in_net("fd00::1".parse().unwrap(), "fd00::".parse().unwrap(), 8));
        assert_eq!(prefix_len(&[255, 255, 0, 0]), Some(16));
        assert_eq!(prefix_len(&[255, 0, 255, 0]), None);
    }

    #[test]
    fn unsupported_lines_name_the_line() {
        let bad = |t: &str| Hba::parse(t, "hba", Path::new(".")).unwrap_err().to_string();
        assert_eq!(bad("\nhost all all samenet md5\n"), "hba:2: samenet is not supported");
        assert!(bad("hostgssenc all all all md5").contains("invalid connection type"));
        assert!(bad("host all +admins all md5").contains("group membership"));
        assert!(bad("host all all 10.0.0.0/33 md5").contains("invalid address"));
        assert!(bad("host all all all ldap").contains("hba:1"));
        assert!(bad("host all all all md5 clientcert=verify-full").contains("unsupported option"));
        assert!(bad("host all all all peer").contains("only for local"));
        assert!(bad("local all all any").contains("any"));
    }

    #[test]
    fn at_files_hold_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admins"), "alice bob\n# c\ncarol\n").unwrap();
        let h = Hba::parse("local all @admins trust\n", "h", dir.path()).unwrap();
        assert_eq!(method(&h, ConnKind::Local, "d", "carol"), Some(AuthType::Trust));
        assert_eq!(method(&h, ConnKind::Local, "d", "mallory"), None);
    }
}
