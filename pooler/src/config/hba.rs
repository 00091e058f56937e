//! auth_hba_file: PgBouncer's subset of pg_hba.conf. Connection types `local`, `host`,
//! `hostssl`, `hostnossl`; databases `all`, `sameuser`, `replication`, `@file` and lists; users
//! `all`, `@file` and lists; addresses `all` and IPv4/IPv6 CIDR (or address plus mask); methods
//! trust, reject, peer, password, md5, scram-sha-256, cert and ldap (which refuses here), with
//! `map=`. As in PgBouncer, a line outside that subset is skipped with a warning and the rest of
//! the file loads. The first line that matches decides; no match means the login is rejected.

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
    /// Network address and mask bytes (4 or 16).
    Net(IpAddr, Vec<u8>),
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

/// Why a line is skipped (PgBouncer's `could not parse hba config line N`).
type Skip = String;

fn names(field: &[Token], dir: &Path, notes: &mut Vec<String>, at: &str) -> Result<Vec<Name>, Skip> {
    let mut out = Vec::new();
    for t in field {
        if t.quoted {
            out.push(Name::Literal(t.text.clone()));
            continue;
        }
        // PgBouncer reads the user field with the database field's keywords too.
        match t.text.as_str() {
            "all" => out.push(Name::All),
            "sameuser" => out.push(Name::SameUser),
            "replication" => out.push(Name::Replication),
            "samerole" | "samegroup" => return Err(format!("{} is not supported", t.text)),
            s if s.starts_with('+') => return Err("group membership (+) is not supported".into()),
            s if s.starts_with('@') => {
                let path = dir.join(&s[1..]);
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
                for line in text.lines() {
                    out.extend(tokens(line).into_iter().map(|t| Name::Literal(t.text)));
                }
            }
            s => {
                // PgBouncer has no regular expressions: `/...` is a name like any other.
                if s.starts_with('/') {
                    notes.push(format!("{at}: \"{s}\" is compared as a plain name (no regular expressions)"));
                }
                out.push(Name::Literal(s.to_owned()));
            }
        }
    }
    Ok(out)
}

/// The address field (and the mask field after a bare address); true when the mask field was
/// used. As PgBouncer: IPv4 or IPv6 only, no host names or `samehost`/`samenet`.
fn address(
    field: &[Token],
    mask: Option<&[Token]>,
    notes: &mut Vec<String>,
    at: &str,
) -> Result<(Address, bool), Skip> {
    let [t] = field else { return Err("one address expected".into()) };
    if t.text == "all" && !t.quoted {
        return Ok((Address::All, false));
    }
    let (ip, bits) = match t.text.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (t.text.as_str(), None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| format!("failed to parse address \"{}\"", t.text))?;
    let len = if ip.is_ipv4() { 4 } else { 16 };
    let (net, used_mask) = match bits {
        Some(bits) => {
            let bits = bits
                .parse::<u8>()
                .ok()
                .filter(|b| usize::from(*b) <= len * 8)
                .ok_or_else(|| format!("invalid mask \"{}\"", t.text))?;
            (mask_of(bits, len), false)
        }
        None => {
            let Some([m]) = mask else { return Err(format!("address {ip} needs a /prefix or a mask")) };
            let octets = match (ip, m.text.parse::<IpAddr>()) {
                (IpAddr::V4(_), Ok(IpAddr::V4(m))) => m.octets().to_vec(),
                (IpAddr::V6(_), Ok(IpAddr::V6(m))) => m.octets().to_vec(),
                _ => return Err(format!("failed to parse mask \"{}\"", m.text)),
            };
            (octets, true)
        }
    };
    if octets(ip).iter().zip(&net).any(|(a, m)| a & !m != 0) {
        notes.push(format!("{at}: address {ip} does not match its mask (the line matches no address)"));
    }
    Ok((Address::Net(ip, net), used_mask))
}

/// A netmask of `bits` leading ones, `len` bytes long.
fn mask_of(bits: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let left = usize::from(bits).saturating_sub(i * 8).min(8);
            (0xffu16 << (8 - left)) as u8
        })
        .collect()
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Whether `addr` is in `net` under `mask` (any mask, contiguous or not, as PgBouncer takes it).
fn in_net(addr: IpAddr, net: IpAddr, mask: &[u8]) -> bool {
    let a = match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(_)) => a.octets().to_vec(),
        (IpAddr::V6(a), IpAddr::V6(_)) => a.octets().to_vec(),
        (IpAddr::V6(a), IpAddr::V4(_)) => match a.to_ipv4_mapped() {
            Some(a) => a.octets().to_vec(),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    // The network as written, host bits and all, as PgBouncer compares it: a line whose address
    // has bits outside its mask (`10.1.2.3/8`, warned about at load) matches nobody, never the
    // wider network.
    a.iter().zip(octets(net)).zip(mask).all(|((x, y), m)| x & m == y)
}

/// The method word, as PgBouncer spells it (lower case, unquoted). `ldap` is PgBouncer's too,
/// but pgmux has no LDAP: such a line refuses, as a PgBouncer built without LDAP does.
fn method(t: &Token, notes: &mut Vec<String>, at: &str) -> Result<AuthType, Skip> {
    let m = match t.text.as_str() {
        _ if t.quoted => return Err(format!("unsupported method \"{}\"", t.text)),
        "trust" => AuthType::Trust,
        "reject" => AuthType::Reject,
        "md5" => AuthType::Md5,
        "password" => AuthType::Plain,
        "peer" => AuthType::Peer,
        "cert" => AuthType::Cert,
        "scram-sha-256" => AuthType::ScramSha256,
        "ldap" => {
            notes.push(format!("{at}: ldap is not supported by pgmux: logins this line matches are rejected"));
            AuthType::Reject
        }
        other => return Err(format!("unsupported method \"{other}\"")),
    };
    Ok(m)
}

/// One non-empty line as a rule, or why it is skipped.
fn rule(f: &[Vec<Token>], dir: &Path, notes: &mut Vec<String>, at: String) -> Result<Rule, Skip> {
    let kind = match f[0].as_slice() {
        [t] if !t.quoted && t.text == "local" => LineType::Local,
        [t] if !t.quoted && t.text == "host" => LineType::Host,
        [t] if !t.quoted && t.text == "hostssl" => LineType::HostSsl,
        [t] if !t.quoted && t.text == "hostnossl" => LineType::HostNoSsl,
        _ => return Err("unknown connection type (local, host, hostssl, hostnossl)".into()),
    };
    let need = if kind == LineType::Local { 4 } else { 5 };
    if f.len() < need {
        return Err("too few fields".into());
    }
    let databases = names(&f[1], dir, notes, &at)?;
    let users = names(&f[2], dir, notes, &at)?;
    let (address, rest) = if kind == LineType::Local {
        (Address::All, 3)
    } else {
        let (a, used_mask) = address(&f[3], f.get(4).map(Vec::as_slice), notes, &at)?;
        (a, if used_mask { 5 } else { 4 })
    };
    let [word] = f.get(rest).map(Vec::as_slice).unwrap_or_default() else {
        return Err("no authentication method".into());
    };
    let is_ldap = word.text == "ldap" && !word.quoted;
    let method = method(word, notes, &at)?;
    // PgBouncer keeps the rest of an ldap line as its LDAP options; anything else may carry
    // one `map=` option and nothing more.
    let mut map = None;
    if !is_ldap {
        match &f[rest + 1..] {
            [] => {}
            [opt] => match opt.as_slice() {
                [t] if !t.quoted && t.text.starts_with("map=") => map = Some(t.text[4..].to_owned()),
                _ => return Err("unsupported options (only map=NAME is)".into()),
            },
            _ => return Err("unsupported options (only one map=NAME is)".into()),
        }
    }
    // `peer` on a TCP line and `cert` on a unix-socket line load, as in PgBouncer; such a
    // login has no OS user or certificate to check and is refused.
    Ok(Rule { kind, databases, users, address, method, map, at })
}

impl Hba {
    /// Reads and parses `path`; `@file` names are taken relative to its directory. Lines that
    /// cannot be used are skipped with a note in `notes` (see [`Hba::parse`]).
    ///
    /// # Errors
    /// The file cannot be read (PgBouncer's `could not open hba config file`: the caller keeps
    /// an empty rule set, so every login is rejected).
    pub fn load(path: &Path, notes: &mut Vec<String>) -> Result<Self, BadValue> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BadValue(format!("could not open hba config file {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(Self::parse(&text, &path.display().to_string(), dir, notes))
    }

    /// Parses HBA text. As PgBouncer, a line it cannot use is skipped and the rest loads: the
    /// note says `file:line: could not parse hba config line N: reason`. A skipped `reject`
    /// line therefore rejects nobody (docs/AUTH.md).
    pub fn parse(text: &str, name: &str, dir: &Path, notes: &mut Vec<String>) -> Self {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let f = fields(line);
            if f.is_empty() {
                continue;
            }
            let at = format!("{name}:{}", i + 1);
            match rule(&f, dir, notes, at.clone()) {
                Ok(r) => rules.push(r),
                Err(why) => notes.push(format!("{at}: could not parse hba config line {}: {why}", i + 1)),
            }
        }
        Self { rules }
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
                (Address::Net(net, mask), ConnKind::Host { addr, .. }) => in_net(addr, *net, mask),
                (Address::Net(..), ConnKind::Local) => false,
            };
            let db_ok = r.databases.iter().any(|n| match n {
                Name::Replication => physical,
                _ if physical => false,
                Name::All => true,
                Name::SameUser => database == user,
                Name::Literal(d) => d == database,
            });
            // As PgBouncer: `sameuser` in the user field matches a user named as the database;
            // `replication` there matches nobody.
            let user_ok = r.users.iter().any(|n| match n {
                Name::All => true,
                Name::Literal(u) => u == user,
                Name::SameUser => user == database,
                Name::Replication => false,
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

    /// Parses text that must load without notes.
    fn parse(text: &str) -> Hba {
        let mut notes = Vec::new();
        let h = Hba::parse(text, "h", Path::new("."), &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        h
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
        let h = parse(text);
        assert_eq!(method(&h, ConnKind::Local, "pgbouncer", "postgres"), Some(AuthType::Peer));
        assert_eq!(h.find(ConnKind::Local, "pgbouncer", "postgres", false).unwrap().map.as_deref(), Some("ops"));
        assert_eq!(method(&h, ConnKind::Local, "app", "x"), Some(AuthType::ScramSha256));
        assert_eq!(method(&h, host("10.1.2.3", true), "app", "x"), Some(AuthType::Reject));
        // "all" in quotes is a user called all.
        assert_eq!(method(&h, host("10.2.0.1", true), "app", "x"), Some(AuthType::Md5));
        assert_eq!(method(&h, host("10.2.0.1", true), "app", "all"), Some(AuthType::Cert));
        assert_eq!(method(&h, host("::1", false), "u", "u"), Some(AuthType::Trust));
        let only_v6 = parse("host sameuser all ::1/128 trust\n");
        assert_eq!(method(&only_v6, host("::1", false), "u", "u"), Some(AuthType::Trust));
        assert_eq!(method(&only_v6, host("::1", false), "d", "u"), None);
        assert_eq!(method(&only_v6, host("127.0.0.1", false), "u", "u"), None);
        let lists = parse("host db1,db2 a, b 127.0.0.1 255.255.255.255 password\n");
        let spaced = parse("host tmp1,all user1,user2 , user3 16.0.0.0/8 md5\n");
        assert!(spaced
            .find(ConnKind::Host { addr: "16.1.2.3".parse().unwrap(), tls: false }, "x", "user3", false)
            .is_some());
        // Physical replication matches only the `replication` keyword.
        let rep = parse("local replication all trust\nlocal all all reject\n");
        assert_eq!(rep.find(ConnKind::Local, "app", "u", true).unwrap().method, AuthType::Trust);
        assert_eq!(rep.find(ConnKind::Local, "replication", "u", false).unwrap().method, AuthType::Reject);
        assert_eq!(method(&lists, host("127.0.0.1", false), "db2", "b"), Some(AuthType::Plain));
        assert_eq!(method(&lists, host("127.0.0.2", false), "db2", "b"), None);
        assert_eq!(method(&lists, host("127.0.0.1", false), "db3", "b"), None);
    }

    #[test]
    fn hostssl_and_hostnossl_follow_tls() {
        let h = parse("hostnossl all all all reject\nhostssl all all all trust\n");
        assert_eq!(method(&h, host("1.2.3.4", false), "d", "u"), Some(AuthType::Reject));
        assert_eq!(method(&h, host("1.2.3.4", true), "d", "u"), Some(AuthType::Trust));
        assert_eq!(method(&h, ConnKind::Local, "d", "u"), None);
    }

    #[test]
    fn cidr_edges() {
        let cidr = |a: &str, n: &str, bits: u8| {
            let net: IpAddr = n.parse().unwrap();
            in_net(a.parse().unwrap(), net, &mask_of(bits, octets(net).len()))
        };
        assert!(cidr("192.168.1.77", "192.168.1.0", 24));
        assert!(!cidr("192.168.2.1", "192.168.1.0", 24));
        assert!(cidr("10.0.0.1", "0.0.0.0", 0));
        assert!(cidr("10.0.0.9", "10.0.0.8", 29));
        assert!(!cidr("10.0.0.16", "10.0.0.8", 29));
        assert!(cidr("::ffff:10.0.0.1", "10.0.0.0", 8));
        assert!(cidr("fd00::1", "fd00::", 8));
        // Host bits outside the mask: nobody, as in PgBouncer.
        assert!(!cidr("10.1.2.3", "10.1.2.3", 8));
        assert!(!cidr("10.200.0.1", "10.1.2.3", 8));
        assert_eq!(mask_of(20, 4), vec![255, 255, 240, 0]);
        // A netmask need not be contiguous, as in PgBouncer.
        let h = parse("host all all 10.0.0.1 255.0.255.255 trust\n");
        assert_eq!(method(&h, host("10.9.0.1", false), "d", "u"), Some(AuthType::Trust));
        assert_eq!(method(&h, host("10.9.1.1", false), "d", "u"), None);
    }

    #[test]
    fn lines_pgbouncer_cannot_parse_are_skipped_with_file_and_line() {
        // Each bad line sits between a reject for 10.0.0.1 and a trust for all: skipping it
        // leaves those two in force, and the note names the file and line.
        let bad = [
            "host all all samehost trust",
            "host all all samenet trust",
            "host all all localhost trust",
            "host all all db.example.com trust",
            "host all +admins all trust",
            "host samerole all all trust",
            "host all all all ident",
            "host all all all gss",
            "host all all all sspi",
            "host all all all radius",
            "host all all all pam",
            "host all all all bsd",
            "host all all all MD5",
            "hostgssenc all all all trust",
            "hostnogssenc all all all trust",
            "host all all 10.0.0.0/33 trust",
            "host all all 10.0.0.0 255.0.0 trust",
            "host all all",
            "local all",
            "host all all all md5 clientcert=verify-full",
            "host all all all md5 map=a map=b",
            "host all @missing all trust",
            "local all all any",
            "%$ garbage here",
        ];
        for line in bad {
            let text = format!("host all all 10.0.0.1/32 reject\n\n{line}\nhost all all all md5\n");
            let mut notes = Vec::new();
            let h = Hba::parse(&text, "hba.conf", Path::new("."), &mut notes);
            assert_eq!(notes.len(), 1, "{line}: {notes:?}");
            assert!(notes[0].starts_with("hba.conf:3: could not parse hba config line 3: "), "{line}: {notes:?}");
            assert_eq!(method(&h, host("10.0.0.1", false), "d", "u"), Some(AuthType::Reject), "{line}");
            assert_eq!(method(&h, host("10.0.0.2", false), "d", "u"), Some(AuthType::Md5), "{line}");
            assert_eq!(method(&h, ConnKind::Local, "d", "u"), None, "{line}");
        }
    }

    #[test]
    fn lines_pgbouncer_accepts_load() {
        // peer on TCP and cert on a socket load (and refuse at login: no OS user, no
        // certificate); `/regex` is a plain name; ldap refuses in pgmux.
        let mut notes = Vec::new();
        let text = "host all all all peer\nlocal all all cert\nlocal all /^a.*$ trust\nhost all all 10.0.0.0/8 ldap ldapserver=x ldapprefix=\"cn=\"\nhost all all all md5 map=ops\n";
        let h = Hba::parse(text, "h", Path::new("."), &mut notes);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("h:3: \"/^a.*$\" is compared as a plain name"), "{notes:?}");
        assert!(notes[1].starts_with("h:4: ldap is not supported"), "{notes:?}");
        assert_eq!(method(&h, host("1.2.3.4", false), "d", "u"), Some(AuthType::Peer));
        assert_eq!(method(&h, ConnKind::Local, "d", "u"), Some(AuthType::Cert));
        let h = Hba::parse(&text.replace("host all all all peer\n", ""), "h", Path::new("."), &mut notes);
        assert_eq!(method(&h, host("10.1.1.1", false), "d", "u"), Some(AuthType::Reject));
        assert_eq!(method(&h, host("11.1.1.1", false), "d", "u"), Some(AuthType::Md5));
        assert_eq!(h.find(host("11.1.1.1", false), "d", "u", false).unwrap().map.as_deref(), Some("ops"));
        // As PgBouncer: `sameuser` in the user field matches a user named as the database.
        let h = parse("local all sameuser trust\n");
        assert_eq!(method(&h, ConnKind::Local, "app", "app"), Some(AuthType::Trust));
        assert_eq!(method(&h, ConnKind::Local, "app", "bob"), None);
    }

    #[test]
    fn a_missing_file_is_an_error_the_caller_turns_into_no_rules() {
        let mut notes = Vec::new();
        let e = Hba::load(Path::new("/nonexistent/hba.conf"), &mut notes).unwrap_err().to_string();
        assert!(e.starts_with("could not open hba config file /nonexistent/hba.conf: "), "{e}");
    }

    #[test]
    fn at_files_hold_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admins"), "alice bob\n# c\ncarol\n").unwrap();
        let h = Hba::parse("local all @admins trust\n", "h", dir.path(), &mut Vec::new());
        assert_eq!(method(&h, ConnKind::Local, "d", "carol"), Some(AuthType::Trust));
        assert_eq!(method(&h, ConnKind::Local, "d", "mallory"), None);
    }
}
