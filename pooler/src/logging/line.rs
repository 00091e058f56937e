//! One log record turned into text: PgBouncer's line (`2026-12-03 06:08:23.548 UTC [pid] LOG
//! C-0x1a: p0/alice@127.0.0.1:41234 login attempt: ...`) or a JSON object with the same fields.
//! Pure formatting, no I/O: the layer decides where the bytes go.

use std::fmt::Write as _;
use std::time::SystemTime;

/// Severity as PgBouncer spells it in its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// `FATAL`: the process cannot go on.
    Fatal,
    /// `ERROR`.
    Error,
    /// `WARNING`.
    Warning,
    /// `LOG`: the default level.
    Log,
    /// `DEBUG` (verbose = 1, `-v`).
    Debug,
    /// `NOISE` (verbose >= 2, `-vv`).
    Noise,
}

impl Severity {
    /// The tag in the line.
    pub fn tag(self) -> &'static str {
        match self {
            Severity::Fatal => "FATAL",
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Log => "LOG",
            Severity::Debug => "DEBUG",
            Severity::Noise => "NOISE",
        }
    }

    /// tracing's levels mapped onto PgBouncer's: error, warn, info, debug, trace.
    pub fn of(level: &tracing::Level) -> Severity {
        match *level {
            tracing::Level::ERROR => Severity::Error,
            tracing::Level::WARN => Severity::Warning,
            tracing::Level::INFO => Severity::Log,
            tracing::Level::DEBUG => Severity::Debug,
            tracing::Level::TRACE => Severity::Noise,
        }
    }

    /// The most detailed severity written at `verbose` (0: LOG, 1: DEBUG, 2+: NOISE).
    pub fn max_for_verbose(verbose: u32) -> Severity {
        match verbose {
            0 => Severity::Log,
            1 => Severity::Debug,
            _ => Severity::Noise,
        }
    }

    /// Syslog priority (RFC 5424 severity).
    pub fn syslog_severity(self) -> u8 {
        match self {
            Severity::Fatal => 2,
            Severity::Error => 3,
            Severity::Warning => 4,
            Severity::Log => 6,
            Severity::Debug | Severity::Noise => 7,
        }
    }
}

/// The connection a record is about: rendered as PgBouncer's `C-0x1a: db/user@addr ` prefix.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnFields {
    /// `C-0x1a` or `S-0x2b`.
    pub conn: String,
    /// Database name, `(nodb)` when not known yet.
    pub db: String,
    /// User name, `(nouser)` when not known yet.
    pub user: String,
    /// Peer address as `ip:port`, `[ipv6]:port` or `unix(pid):port`.
    pub addr: String,
}

/// A record ready to print.
#[derive(Debug, Default)]
pub struct Record {
    /// The connection, when the event names one.
    pub conn: Option<ConnFields>,
    /// The message.
    pub message: String,
    /// Other fields of the event, in order.
    pub extra: Vec<(&'static str, String)>,
}

/// `2026-12-03 06:08:23.548 UTC`, the timestamp PgBouncer writes (pgmux always logs UTC).
pub fn timestamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// PgBouncer's line, without the trailing newline. Newlines inside the message are followed
/// by a tab, as PgBouncer does, so that one record stays one logical line for log parsers.
pub fn text(ts: &str, pid: u32, sev: Severity, rec: &Record) -> String {
    let mut s = String::with_capacity(96 + rec.message.len());
    let _ = write!(s, "{ts} [{pid}] {} ", sev.tag());
    s.push_str(&body(rec));
    s
}

/// What follows the level: the connection prefix, the message and any extra fields. Syslog
/// gets this part alone.
pub fn body(rec: &Record) -> String {
    let mut s = String::with_capacity(64 + rec.message.len());
    if let Some(c) = &rec.conn {
        let _ = write!(s, "{}: {}/{}@{} ", c.conn, c.db, c.user, c.addr);
    }
    for ch in rec.message.chars() {
        s.push(ch);
        if ch == '\n' {
            s.push('\t');
        }
    }
    for (k, v) in &rec.extra {
        let _ = write!(s, " {k}={v}");
    }
    while s.ends_with(char::is_whitespace) {
        s.pop();
    }
    s
}

/// The same record as one JSON object (`log_format = json`).
pub fn json(ts: &str, pid: u32, sev: Severity, rec: &Record) -> String {
    let mut s = String::with_capacity(128 + rec.message.len());
    s.push('{');
    field(&mut s, "time", ts);
    let _ = write!(s, ",\"pid\":{pid},");
    field(&mut s, "level", sev.tag());
    if let Some(c) = &rec.conn {
        for (k, v) in [("conn", &c.conn), ("db", &c.db), ("user", &c.user), ("addr", &c.addr)] {
            s.push(',');
            field(&mut s, k, v);
        }
    }
    s.push(',');
    field(&mut s, "msg", &rec.message);
    for (k, v) in &rec.extra {
        s.push(',');
        field(&mut s, k, v);
    }
    s.push('}');
    s
}

fn field(s: &mut String, key: &str, value: &str) {
    quote(s, key);
    s.push(':');
    quote(s, value);
}

/// A JSON string literal (RFC 8259: quote, backslash and control characters escaped).
fn quote(s: &mut String, v: &str) {
    s.push('"');
    for ch in v.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Record {
        Record {
            conn: Some(ConnFields {
                conn: "C-0x1a".into(),
                db: "p0".into(),
                user: "bouncer".into(),
                addr: "127.0.0.1:41234".into(),
            }),
            message: "login attempt: db=p0 user=bouncer tls=no replication=no".into(),
            extra: vec![],
        }
    }

    #[test]
    fn text_lines_read_like_pgbouncer() {
        let line = text("2026-12-03 06:08:23.548 UTC", 42, Severity::Log, &login());
        assert_eq!(
            line,
            "2026-12-03 06:08:23.548 UTC [42] LOG C-0x1a: p0/bouncer@127.0.0.1:41234 login attempt: db=p0 \
             user=bouncer tls=no replication=no"
        );
        let plain = Record { message: "got SIGUSR2, continuing from PAUSE".into(), ..Default::default() };
        assert_eq!(text("T", 1, Severity::Log, &plain), "T [1] LOG got SIGUSR2, continuing from PAUSE");
    }

    #[test]
    fn newlines_are_continued_with_a_tab_and_trailing_space_dropped() {
        let r = Record { message: "first\nsecond\n  ".into(), ..Default::default() };
        assert_eq!(text("T", 1, Severity::Warning, &r), "T [1] WARNING first\n\tsecond");
    }

    #[test]
    fn json_has_the_same_fields_escaped() {
        let mut r = login();
        r.message = "say \"hi\"\n\u{1}".into();
        r.extra.push(("reason", "x".into()));
        let j = json("T", 7, Severity::Error, &r);
        assert_eq!(
            j,
            "{\"time\":\"T\",\"pid\":7,\"level\":\"ERROR\",\"conn\":\"C-0x1a\",\"db\":\"p0\",\"user\":\"bouncer\",\
             \"addr\":\"127.0.0.1:41234\",\"msg\":\"say \\\"hi\\\"\\n\\u0001\",\"reason\":\"x\"}"
        );
    }

    #[test]
    fn timestamps_have_milliseconds_and_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_278_103_548);
        assert_eq!(timestamp(t), "2026-12-03 06:08:23.548 UTC");
    }
}
