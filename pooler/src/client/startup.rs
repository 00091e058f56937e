//! The start of a client connection: TLS (after an SSLRequest, or directly for PostgreSQL 17's
//! `sslnegotiation=direct`), GSSENCRequest (answered 'N'), CancelRequest (also over TLS), and
//! the StartupMessage with PgBouncer's rules for parameters.

use pgmux_protocol::startup::{split_startup, StartupPacket};
use pgmux_protocol::{build, sqlstate};

use super::params::ClientParams;
use super::ClientError;
use crate::config::General;
use crate::net::client_io::ClientIo;
use crate::net::Stream;
use crate::replication::Replication;
use crate::tls::ClientTls;

/// A session's startup parameters after PgBouncer's filtering.
#[derive(Debug)]
pub struct StartupRequest {
    /// User name.
    pub user: String,
    /// Database name (defaults to the user name).
    pub database: String,
    /// Tracked parameters the client set.
    pub params: ClientParams,
    /// Protocol minor version the client asked for.
    pub minor: i32,
    /// `_pq_.` options we do not know.
    pub unknown_options: Vec<String>,
    /// A replication connection: how PgBouncer names its kind (`yes`, `database`), and every
    /// startup parameter but user and database, for its own server login.
    pub replication: Option<(Replication, Vec<(String, String)>)>,
}

/// Reads packets until a StartupMessage or CancelRequest.
///
/// # Errors
/// EOF, malformed packets (the client has been sent 08P01).
pub async fn read_opening(io: &mut ClientIo, tls: Option<&ClientTls>) -> Result<StartupPacket, ClientError> {
    let mut first_packet = true;
    loop {
        if let (true, Some(t), Some(&TLS_HANDSHAKE_RECORD)) = (first_packet, tls, io.rbuf.first()) {
            // A TLS ClientHello where a length would be (a startup packet's first byte is 0):
            // PostgreSQL 17's direct negotiation. The bytes read so far start the handshake.
            if io.stream.is_plain_tcp() {
                let hello = io.rbuf.split();
                start_tls(io, t, &hello, true).await?;
                first_packet = false;
                continue;
            }
        }
        if !io.rbuf.is_empty() {
            first_packet = false;
        }
        // The header as it came, for PgBouncer's words about a bad one.
        let mut head = [0u8; 8];
        let seen = io.rbuf.len().min(8);
        head[..seen].copy_from_slice(&io.rbuf[..seen]);
        let packet = split_startup(&mut io.rbuf);
        // Bytes sent behind an encryption request, before its answer, could be a third party's
        // (CVE-2021-23222): refused whatever the answer, as PostgreSQL and PgBouncer do.
        let early = match packet {
            Ok(Some(StartupPacket::SslRequest)) if io.tls.is_none() => Some("SSL request"),
            Ok(Some(StartupPacket::GssEncRequest)) => Some("GSSAPI encryption request"),
            _ => None,
        };
        if let Some(what) = early.filter(|_| !io.rbuf.is_empty()) {
            let msg = format!("received unencrypted data after {what}");
            io.fatal(sqlstate::PROTOCOL_VIOLATION, &msg).await;
            return Err(ClientError::Protocol(pgmux_protocol::ProtocolError::Invalid(
                "unencrypted data after request",
            )));
        }
        match packet {
            Ok(Some(StartupPacket::SslRequest)) => match tls {
                _ if io.tls.is_some() => {
                    return Err(ClientError::Protocol(pgmux_protocol::ProtocolError::Invalid("SSL request inside SSL")))
                }
                Some(t) if io.stream.is_plain_tcp() => {
                    io.wbuf.extend_from_slice(b"S");
                    io.flush().await?;
                    start_tls(io, t, &[], false).await?;
                }
                _ => {
                    io.wbuf.extend_from_slice(b"N");
                    io.flush().await?;
                }
            },
            Ok(Some(StartupPacket::GssEncRequest)) => {
                io.wbuf.extend_from_slice(b"N");
                io.flush().await?;
            }
            Ok(Some(p)) => return Ok(p),
            Ok(None) => io.fill().await?,
            Err(e) => {
                use pgmux_protocol::startup::{BAD_CANCEL, UNKNOWN_CODE};
                use pgmux_protocol::ProtocolError as P;
                // PgBouncer's words for each, told to the client (and logged) as its refusals
                // are; a malformed cancel is dropped without a word, as PgBouncer drops it.
                let msg = match e {
                    P::Invalid(BAD_CANCEL) => return Err(e.into()),
                    P::OldProtocol => e.to_string(),
                    P::BadLength(_) | P::Invalid(UNKNOWN_CODE) => {
                        format!("bad packet header: '{}'", hex(&head[..seen]))
                    }
                    P::Unterminated("startup") | P::Truncated("startup") => {
                        "invalid startup packet layout: expected terminator as last byte".to_owned()
                    }
                    _ => format!("bad startup packet: {e}"),
                };
                return Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, msg));
            }
        }
    }
}

/// Bytes in lower-case hex (PgBouncer's `bad packet header: '...'`).
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Runs the TLS handshake on the client's TCP socket (`already_read` holds the start of a
/// direct ClientHello) and switches `io` to the TLS stream.
async fn start_tls(io: &mut ClientIo, tls: &ClientTls, already_read: &[u8], direct: bool) -> Result<(), ClientError> {
    let Some(tcp) = io.stream.take_tcp() else { return Err(ClientError::Closed) };
    let (stream, info) = match tls.accept(tcp, already_read, direct).await {
        Ok(done) => done,
        Err(e) => return Err(ClientError::TlsHandshake(crate::tls::handshake_failure(&e))),
    };
    io.stream = Stream::TlsAccepted(Box::new(stream));
    io.tls = Some(Box::new(info));
    Ok(())
}

/// Applies PgBouncer's parameter rules: tracked ones are kept, ignored ones dropped, anything
/// else refused.
///
/// # Errors
/// A refused parameter or no user name (the message to send is in `ClientError::Refused`).
pub fn accept_params(version: i32, raw: Vec<(String, String)>, g: &General) -> Result<StartupRequest, ClientError> {
    let mut params = ClientParams::new(&g.track_extra_parameters);
    let mut user = None;
    let mut database = None;
    let mut unknown_options = Vec::new();
    let ignored = |name: &str| g.ignore_startup_parameters.iter().any(|i| i.eq_ignore_ascii_case(name));
    // A replication connection gets a server of its own, logged in with the client's startup
    // parameters, so its `options` may carry anything (PgBouncer 1.23+).
    let replication = Some(Replication::of_params(&raw)).filter(|r| *r != Replication::None);
    let replication =
        replication.map(|kind| (kind, raw.iter().filter(|(k, _)| k != "user" && k != "database").cloned().collect()));
    for (k, v) in raw {
        match k.as_str() {
            "user" => user = Some(v),
            "database" => database = Some(v),
            "options" if replication.is_some() => {}
            "options" => apply_options(&v, &mut params, ignored)?,
            "replication" => {}
            _ if k.starts_with("_pq_.") => unknown_options.push(k),
            _ => {
                if !params.set(&k, &v) && !ignored(&k) {
                    return Err(ClientError::Refused(
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("unsupported startup parameter: {k}"),
                    ));
                }
            }
        }
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "no username supplied".into()))?;
    let database = database.filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());
    Ok(StartupRequest { user, database, params, minor: version & 0xffff, unknown_options, replication })
}

/// `options` may carry `-c name=value` (or `--name=value`) settings, as PgBouncer's
/// `set_startup_options`: words are split on blanks, a backslash escapes the next character
/// (libpq sends `datestyle=German,\\ YMD`), tracked names are kept, names in
/// ignore_startup_parameters are dropped (all unknown ones when `options` itself is listed),
/// anything else is refused.
fn apply_options(v: &str, params: &mut ClientParams, ignored: impl Fn(&str) -> bool) -> Result<(), ClientError> {
    const ONLY_C: &str = "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed";
    let refuse = |msg: String| ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, msg);
    let blanks = |s: &str| s.trim_start_matches(is_blank).len();
    // Blanks alone are no option (PgBouncer refuses them); blanks after the last one are fine.
    if !v.is_empty() && blanks(v) == 0 {
        return Err(refuse(ONLY_C.into()));
    }
    let mut rest = v;
    loop {
        rest = &rest[rest.len() - blanks(rest)..];
        if rest.is_empty() {
            return Ok(());
        }
        let dashdash = rest.starts_with("--");
        rest = if dashdash {
            &rest[2..]
        } else if let Some(r) = rest.strip_prefix("-c") {
            &r[r.len() - blanks(r)..]
        } else {
            return Err(refuse(ONLY_C.into()));
        };
        let (word, after) = escaped_word(rest);
        rest = after;
        let Some((name, value)) = word.split_once('=') else {
            return Err(refuse(ONLY_C.into()));
        };
        // PostgreSQL reads `--work-mem=x` as work_mem.
        let name = if dashdash { name.replace('-', "_") } else { name.to_owned() };
        if !params.set(&name, value) && !ignored(&name) && !ignored("options") {
            return Err(refuse(format!("unsupported startup parameter in options: {name}")));
        }
    }
}

/// C's `isspace` in the C locale, as PostgreSQL and PgBouncer split `options`: ASCII blanks,
/// vertical tab included (a no-break space is not one).
fn is_blank(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0b'
}

/// One blank-delimited word of `options` with backslash escapes removed (PgBouncer's
/// `read_escaped_token`), and the text after it.
fn escaped_word(s: &str) -> (String, &str) {
    let mut word = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e)) => word.push(e),
                None => return (word, ""),
            },
            c if is_blank(c) => return (word, &s[i..]),
            c => word.push(c),
        }
    }
    (word, "")
}

/// Tells a client that asked for protocol 3.x (x > 0) or `_pq_.` options what we speak.
pub fn negotiate(io: &mut ClientIo, req: &StartupRequest) {
    if req.minor > 0 || !req.unknown_options.is_empty() {
        let opts: Vec<&str> = req.unknown_options.iter().map(String::as_str).collect();
        build::negotiate_protocol_version(&mut io.wbuf, pgmux_protocol::startup::PROTOCOL_3_0, &opts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn general(extra: &str) -> General {
        let text = format!("[pgbouncer]\n{extra}\n");
        let entries = config::ini::parse_text(&text, std::path::Path::new("t.ini")).unwrap();
        config::build(std::path::Path::new("t.ini"), entries).unwrap().general
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn tracked_kept_ignored_dropped_others_refused() {
        let g = general("ignore_startup_parameters = extra_float_digits");
        let r =
            accept_params(196608, kv(&[("user", "u"), ("TimeZone", "UTC"), ("extra_float_digits", "3")]), &g).unwrap();
        assert_eq!((r.user.as_str(), r.database.as_str()), ("u", "u"));
        assert_eq!(r.params.get("timezone"), Some("UTC"));
        let e = accept_params(196608, kv(&[("user", "u"), ("search_path", "x")]), &g).unwrap_err();
        assert!(matches!(e, ClientError::Refused(_, m) if m == "unsupported startup parameter: search_path"));
        assert!(accept_params(196608, kv(&[("database", "d")]), &g).is_err());
    }

    #[test]
    fn options_with_tracked_settings_are_accepted() {
        let g = general("");
        let r = accept_params(196608, kv(&[("user", "u"), ("options", "-c DateStyle=ISO --application-name=x")]), &g)
            .unwrap();
        assert_eq!(r.params.get("DateStyle"), Some("ISO"));
        assert_eq!(r.params.get("application_name"), Some("x"));
        assert!(accept_params(196608, kv(&[("user", "u"), ("options", "-c work_mem=1MB")]), &g).is_err());
    }

    fn refusal(options: &str, g: &General) -> String {
        match accept_params(196608, kv(&[("user", "u"), ("options", options)]), g) {
            Err(ClientError::Refused(_, m)) => m,
            other => panic!("{options:?} was accepted: {other:?}"),
        }
    }

    /// The forms libpq and PgBouncer's tests send (test_options_startup_param).
    #[test]
    fn options_as_pgbouncer_parses_them() {
        let g = general("ignore_startup_parameters = extra_float_digits");
        let ok = |options: &str| accept_params(196608, kv(&[("user", "u"), ("options", options)]), &g).unwrap().params;
        assert_eq!(ok("  -c    datestyle=German,\\ YMD").get("DateStyle"), Some("German, YMD"));
        let p = ok("-c timezone=Europe/Lisbon  -c    datestyle=German,\\ YMD");
        assert_eq!((p.get("TimeZone"), p.get("DateStyle")), (Some("Europe/Lisbon"), Some("German, YMD")));
        assert_eq!(ok("-ctimezone=Europe/Lisbon  -cdatestyle=German,\\ YMD").get("TimeZone"), Some("Europe/Lisbon"));
        assert_eq!(ok("--timezone=Europe/Lisbon  --datestyle=German,\\ YMD").get("TimeZone"), Some("Europe/Lisbon"));
        let p = ok("-c t\\imezone=\\E\\u\\r\\o\\pe/Lisbon  -c    dat\\estyle\\=\\Ge\\rman,\\ YMD");
        assert_eq!((p.get("TimeZone"), p.get("DateStyle")), (Some("Europe/Lisbon"), Some("German, YMD")));
        // Ignored names are dropped, even when longer than pkt_buf.
        assert_eq!(ok(&format!("-c extra_float_digits={}", "1".repeat(4096))).get("extra_float_digits"), None);
        let only = "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed";
        assert_eq!(refusal("-d", &g), only);
        assert_eq!(refusal("-c timezone", &g), only);
        // Blanks alone are refused; an empty value and blanks after the last option are not.
        assert_eq!(refusal("  ", &g), only);
        assert_eq!(ok("").get("TimeZone"), None);
        assert_eq!(ok("-c timezone=UTC  ").get("TimeZone"), Some("UTC"));
        assert_eq!(refusal("-c enable_seqscan=false", &g), "unsupported startup parameter in options: enable_seqscan");
        // Only ASCII blanks separate: a no-break space is part of the name.
        assert_eq!(
            refusal("-c\u{a0}application_name=x", &g),
            "unsupported startup parameter in options: \u{a0}application_name"
        );
        // With `options` itself ignored, unknown settings are dropped and known ones still kept.
        let g = general("ignore_startup_parameters = options");
        let p = accept_params(196608, kv(&[("user", "u"), ("options", "-c enable_seqscan=false -ctimezone=UTC")]), &g)
            .unwrap()
            .params;
        assert_eq!((p.get("enable_seqscan"), p.get("TimeZone")), (None, Some("UTC")));
    }
}
