//! Opening a server connection and logging in: TLS as server_tls_sslmode asks (TCP only, as
//! PostgreSQL has no TLS on unix sockets), startup packet, trust / clear-text / md5 /
//! SCRAM-SHA-256 (with a password or pass-through keys), then ParameterStatus and
//! BackendKeyData until ReadyForQuery. Also the one-off queries pgmux runs itself.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgmux_protocol::backend::{self, AuthRequest, ErrorFields};
use pgmux_protocol::scram::{self, ClientCredentials, ClientExchange, PassThroughKeys};
use pgmux_protocol::{build, md5, split_frame, tags, Frame, ProtocolError};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::{ServerConn, ServerParams, Target};
use crate::logging::ConnTag;
use crate::net::{PeerAddr, Stream};
use crate::replication::Replication;
use crate::servers::{ServerEntry, ServerInfo, ServerRegistry};
use crate::tls::{ServerTls, SslMode};

/// What the pooler can log in to a server with.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Clear-text password (from the db entry or auth_file).
    pub password: Option<String>,
    /// A stored md5 secret (auth_file `md5...`).
    pub md5_secret: Option<String>,
    /// Keys recovered from a client's SCRAM proof.
    pub scram_keys: Option<PassThroughKeys>,
}

/// Why a server connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Socket error.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Connected, but the login did not finish within server_connect_timeout.
    #[error("server connect timeout")]
    Timeout,
    /// The TCP (or unix socket) connect itself did not finish within server_connect_timeout:
    /// PgBouncer logs this as a failed connect, not as a connect timeout.
    #[error("server connect timeout (no connection)")]
    DialTimeout,
    /// The server sent an ErrorResponse during login.
    #[error("{severity} {message}")]
    Rejected {
        /// SQLSTATE.
        sqlstate: String,
        /// Severity (FATAL).
        severity: String,
        /// Message text.
        message: String,
    },
    /// The server asked for a method we have no secret for.
    #[error("{0}")]
    Auth(String),
    /// The server sent bytes that are not the protocol.
    #[error("server protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server closed during login.
    #[error("server closed the connection during login")]
    Closed,
    /// TLS was required and could not be had.
    #[error("TLS: {0}")]
    Tls(String),
    /// The TLS handshake failed or the certificate was refused (`certificate verify failed:
    /// ...`). As in PgBouncer, waiting clients keep waiting and the pool retries after
    /// server_login_retry: a RELOAD or SET may fix the settings meanwhile.
    #[error("TLS: {0}")]
    TlsHandshake(String),
}

const MAX_LOGIN_MESSAGE: usize = 1 << 20;

impl ServerError {
    /// True when the server answered the login with a refusal (an ErrorResponse, or an
    /// authentication method pgmux has no secret for): retrying is pointless, and every
    /// waiting client is told. Other failures (no connection, timeout, TLS) are retried.
    ///
    /// `57P03` (the database system is starting up / shutting down) is temporary, as in
    /// PgBouncer's kill_pool_logins_server_error: the clients keep waiting and the login is
    /// tried again after server_login_retry, so a PostgreSQL restart is ridden out. pgmux also
    /// counts `57P01` and `57P02` as temporary (PgBouncer refuses its waiting clients with them):
    /// they reach a login only when the postmaster ends every session, for a fast shutdown or
    /// the reset after a backend crashed, and the next try meets `57P03` or the server back.
    pub fn is_refusal(&self) -> bool {
        use pgmux_protocol::sqlstate::{ADMIN_SHUTDOWN, CANNOT_CONNECT_NOW, CRASH_SHUTDOWN};
        match self {
            ServerError::Rejected { sqlstate, .. } => {
                ![CANNOT_CONNECT_NOW, ADMIN_SHUTDOWN, CRASH_SHUTDOWN].contains(&sqlstate.as_str())
            }
            ServerError::Auth(_) => true,
            _ => false,
        }
    }

    /// The reason PgBouncer logs when it closes a server whose connect or login failed.
    pub fn log_reason(&self) -> String {
        match self {
            ServerError::Timeout => "connect timeout".into(),
            ServerError::Io(e) if e.kind() == io::ErrorKind::NotFound => "server DNS lookup failed".into(),
            ServerError::Io(_) | ServerError::DialTimeout => "connect failed".into(),
            ServerError::Rejected { message, .. } => message.clone(),
            ServerError::Auth(_) => "failed to answer authreq".into(),
            ServerError::Protocol(_) => "unknown pkt from server".into(),
            ServerError::Closed => "server conn crashed?".into(),
            ServerError::Tls(m) => m.clone(),
            // PgBouncer's reason after "TLS handshake error: ...".
            ServerError::TlsHandshake(_) => "server conn crashed?".into(),
        }
    }
}

/// Asks a freshly connected server for TLS and runs the handshake when it agrees.
async fn negotiate_tls(mut tcp: TcpStream, host: &str, tls: &ServerTls) -> Result<Stream, ServerError> {
    let mut req = BytesMut::with_capacity(8);
    req.extend_from_slice(&8i32.to_be_bytes());
    req.extend_from_slice(&pgmux_protocol::startup::SSL_REQUEST.to_be_bytes());
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let s = tls.connect(host, tcp).await.map_err(|e| ServerError::TlsHandshake(e.to_string()))?;
            Ok(Stream::TlsConnected(Box::new(s)))
        }
        b'N' if tls.mode >= SslMode::Require => {
            // PgBouncer's words (server_tls_sslmode is require or verify-*).
            Err(ServerError::Tls("server refused SSL".into()))
        }
        b'N' => Ok(Stream::Tcp(tcp)),
        _ => Err(ServerError::Tls("unexpected answer to SSLRequest".into())),
    }
}

/// Where a server being connected is listed: the registry, and the id and pool its row carries.
type Listing<'a> = Option<(&'a Arc<ServerRegistry>, &'a ConnTag)>;

/// Lists a server about to be connected at `addr` (dropped, the row goes).
fn list_at(listing: Listing<'_>, addr: &PeerAddr, target: &Target) -> Option<ServerEntry> {
    listing.map(|(r, tag)| {
        let replication = Replication::of_params(&target.startup_params);
        r.register(ServerInfo::dialling(tag.id, (&tag.db, &tag.user), addr.clone(), replication))
    })
}

/// Opens the socket to `host` (and TLS when asked); `connected` is set once the socket is
/// open, so that a timeout can tell a connect that never finished from a stalled login. With
/// a `listing`, the server is listed from the moment an address is tried.
async fn dial(
    target: &Target,
    host: &str,
    tls: Option<&ServerTls>,
    connected: &AtomicBool,
    listing: Listing<'_>,
) -> Result<(Stream, PeerAddr, Option<ServerEntry>), ServerError> {
    if Target::is_unix(host) {
        let path = format!("{}/.s.PGSQL.{}", host.trim_end_matches('/'), target.port);
        let addr = PeerAddr::Unix(path.clone());
        let entry = list_at(listing, &addr, target);
        // A socket file that is not there is a failed connect, not a failed name lookup (the
        // NotFound the log would call `server DNS lookup failed`).
        let s = UnixStream::connect(&path)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => io::Error::new(io::ErrorKind::ConnectionRefused, e),
                _ => e,
            })?
            .into_std()?;
        connected.store(true, Relaxed);
        let s = crate::net::quiet::QuietUnix::new(s)?;
        return Ok((Stream::QuietUnix(Box::new(s)), addr, entry));
    }
    let mut last = None;
    // A name that does not resolve is NotFound: PgBouncer's "server DNS lookup failed".
    let addrs = tokio::net::lookup_host((host, target.port))
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{host}: {e}")))?;
    for addr in addrs {
        // One row per address tried: a failed one leaves the list before the next is listed.
        let entry = list_at(listing, &PeerAddr::Tcp(addr), target);
        match TcpStream::connect(addr).await {
            Ok(s) => {
                connected.store(true, Relaxed);
                target.tcp.apply(&s);
                if let Some(e) = &entry {
                    e.set_local_addr(s.local_addr().ok());
                }
                let stream = match tls {
                    Some(tls) => negotiate_tls(s, host, tls).await?,
                    None => Stream::Tcp(s),
                };
                return Ok((stream, PeerAddr::Tcp(addr), entry));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no address for {host}"))).into())
}

struct Wire<'a> {
    stream: &'a mut Stream,
    buf: BytesMut,
    out: BytesMut,
}

impl Wire<'_> {
    async fn read_frame(&mut self) -> Result<Frame, ServerError> {
        loop {
            if let Some(f) = split_frame(&mut self.buf, MAX_LOGIN_MESSAGE)? {
                return Ok(f);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ServerError::Closed);
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ServerError> {
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        self.out.clear();
        Ok(())
    }
}

fn rejected(body: &[u8]) -> ServerError {
    let e = ErrorFields::new(body);
    ServerError::Rejected {
        sqlstate: String::from_utf8_lossy(e.sqlstate()).into_owned(),
        severity: String::from_utf8_lossy(e.field(b'S').unwrap_or(b"ERROR")).into_owned(),
        message: e.message(),
    }
}

/// Who a new server connection is for: its log prefix, PgBouncer's connection log lines or not,
/// and the registry that lists it (SHOW SERVERS) from the moment its socket connects.
pub struct Opening<'a> {
    /// Id, pool database and user; given the server's address once connected, so that the
    /// caller's log lines name it.
    pub tag: &'a mut ConnTag,
    /// log_connections: the connect and TLS lines.
    pub log_connections: bool,
    /// Where a pool's server is listed, `new` until its pool takes it ([`ServerEntry::logged_in`]);
    /// none for a one-off probe.
    pub listed_in: Option<&'a Arc<ServerRegistry>>,
}

/// Connects to `host` (picked from `target` at place `picked`) and logs in within `timeout`.
///
/// # Errors
/// Socket errors, timeout, the server's own refusal, or a method we cannot answer.
pub async fn connect(
    target: &Target,
    (picked, host): (usize, &str),
    creds: &Credentials,
    tls: Option<&ServerTls>,
    timeout: Duration,
    opening: Opening<'_>,
) -> Result<Box<ServerConn>, ServerError> {
    let Opening { tag, log_connections, listed_in } = opening;
    let connected = AtomicBool::new(false);
    let attempt = async {
        // Listed while it connects and logs in; a failure drops the entry, and the row with it.
        let listing = listed_in.map(|r| (r, &*tag));
        let (mut stream, addr, entry) = dial(target, host, tls, &connected, listing).await?;
        *tag = ConnTag::server(tag.id, &tag.db, &tag.user, &addr, target.port);
        if log_connections {
            match stream.local_addr() {
                Some(local) => crate::conn_log!(info, tag, "new connection to server (from {local})"),
                None => crate::conn_log!(info, tag, "new connection to server"),
            }
        }
        if let Stream::TlsConnected(t) = &stream {
            let desc = crate::tls::describe_session(t.get_ref().1);
            if log_connections {
                crate::conn_log!(info, tag, "SSL established: {desc}");
            }
            if let Some(e) = &entry {
                e.set_tls(desc);
            }
        }
        let (params, key, leftover) = login(&mut stream, target, creds).await?;
        if let Some(e) = &entry {
            e.set_pid(key.0);
        }
        let now = crate::clock::Micros::now();
        Ok(Box::new(ServerConn {
            stream,
            tag: Box::new(crate::servers::ServerIdent { tag: tag.clone(), entry, served: false, own_reads: 0 }),
            id: tag.id,
            addr: std::sync::Arc::new(addr),
            backend_key: key,
            params,
            created: now,
            last_used: now,
            leftover,
            statements: Default::default(),
            kept_batch: BytesMut::new(),
            kept_begin: BytesMut::new(),
            synced_params: 0,
            session_state: Default::default(),
            generation: 0,
            home: crate::workers::here(),
        }))
    };
    let timeout = if timeout.is_zero() { Duration::from_secs(3600) } else { timeout };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) if connected.load(Relaxed) => Err(ServerError::Timeout),
        Err(_) => Err(ServerError::DialTimeout),
    };
    if result.is_err() {
        target.advance_after_failure(picked);
    }
    result
}

async fn login(
    stream: &mut Stream,
    target: &Target,
    creds: &Credentials,
) -> Result<(ServerParams, (i32, i32), BytesMut), ServerError> {
    let mut w = Wire { stream, buf: BytesMut::with_capacity(1024), out: BytesMut::with_capacity(256) };
    let mut startup: Vec<(&str, &str)> = vec![("user", &target.user), ("database", &target.dbname)];
    startup.extend(target.startup_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    build::startup_message(&mut w.out, &startup);
    w.flush().await?;
    let mut scram: Option<ClientExchange> = None;
    let mut params = ServerParams::default();
    let mut key = (0, 0);
    loop {
        let f = w.read_frame().await?;
        match f.tag {
            tags::backend::AUTHENTICATION => match backend::authentication(f.body())? {
                AuthRequest::Ok => {}
                AuthRequest::Cleartext => {
                    let pw = creds.password.as_ref().ok_or_else(|| {
                        ServerError::Auth(
                            "server asks for a clear-text password but pgmux has no plain password for this user"
                                .into(),
                        )
                    })?;
                    build::password(&mut w.out, pw.as_bytes());
                    w.flush().await?;
                }
                AuthRequest::Md5(salt) => {
                    let secret = match (&creds.password, &creds.md5_secret) {
                        (Some(pw), _) => md5::secret(&target.user, pw.as_bytes()),
                        (None, Some(s)) => s.clone(),
                        _ => {
                            return Err(ServerError::Auth(
                                "server asks for md5 but pgmux has no password or md5 secret for this user".into(),
                            ))
                        }
                    };
                    build::password(&mut w.out, md5::response_from_secret(&secret, salt).as_bytes());
                    w.flush().await?;
                }
                AuthRequest::Sasl(mechs) => {
                    if !mechs.iter().any(|m| *m == scram::MECHANISM.as_bytes()) {
                        return Err(ServerError::Auth("server offers no SASL mechanism pgmux speaks".into()));
                    }
                    let cred = match (&creds.password, &creds.scram_keys) {
                        (Some(pw), _) => ClientCredentials::Password(pw.as_bytes().to_vec()),
                        (None, Some(k)) => ClientCredentials::Keys(k.clone()),
                        _ => {
                            return Err(ServerError::Auth(
                                "server asks for SCRAM but pgmux has neither a password nor SCRAM keys from a client login for this user".into(),
                            ))
                        }
                    };
                    let (ex, first) = ClientExchange::start(cred);
                    build::sasl_initial_response(&mut w.out, scram::MECHANISM, first.as_bytes());
                    w.flush().await?;
                    scram = Some(ex);
                }
                AuthRequest::SaslContinue(data) => {
                    let ex = scram.as_mut().ok_or(ProtocolError::Invalid("SASL continue without SASL start"))?;
                    let reply = ex.respond(data)?;
                    build::sasl_response(&mut w.out, reply.as_bytes());
                    w.flush().await?;
                }
                AuthRequest::SaslFinal(data) => {
                    let ex = scram.as_ref().ok_or(ProtocolError::Invalid("SASL final without SASL start"))?;
                    ex.verify(data)?;
                }
                AuthRequest::Unsupported(code) => {
                    return Err(ServerError::Auth(format!("server asks for unsupported authentication method {code}")))
                }
            },
            tags::backend::PARAMETER_STATUS => {
                let (k, v) = backend::parameter_status(f.body())?;
                params.set(&String::from_utf8_lossy(k), &String::from_utf8_lossy(v));
            }
            tags::backend::BACKEND_KEY_DATA => key = backend::backend_key_data(f.body())?,
            tags::backend::ERROR_RESPONSE => return Err(rejected(f.body())),
            tags::backend::READY_FOR_QUERY => return Ok((params, key, w.buf)),
            // Notices during login are dropped, as PgBouncer does.
            _ => {}
        }
    }
}

/// Runs `sql` with the simple protocol and waits for ReadyForQuery, ignoring rows. Used for
/// connect_query, reset and check queries, and SET of tracked parameters. Parameters the server
/// reports are recorded in `params`.
///
/// # Errors
/// Socket errors, the server closing, or an ErrorResponse (after ReadyForQuery is read).
pub async fn run_simple_query(conn: &mut ServerConn, sql: &str) -> Result<(), ServerError> {
    let mut out = BytesMut::with_capacity(sql.len() + 8);
    build::query(&mut out, sql);
    let leftover = std::mem::take(&mut conn.leftover);
    let mut w = Wire { stream: &mut conn.stream, buf: leftover, out };
    w.flush().await?;
    let mut failure = None;
    loop {
        let f = w.read_frame().await?;
        conn.tag.own_reads += 5 + f.body().len() as u64;
        match f.tag {
            tags::backend::ERROR_RESPONSE => failure = Some(rejected(f.body())),
            tags::backend::PARAMETER_STATUS => {
                let (k, v) = backend::parameter_status(f.body())?;
                conn.params.set(&String::from_utf8_lossy(k), &String::from_utf8_lossy(v));
            }
            tags::backend::READY_FOR_QUERY => {
                conn.leftover = w.buf;
                return match failure {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
            _ => {}
        }
    }
}

/// Runs `sql` with the extended protocol and one text parameter, and returns the rows (each a
/// list of nullable text columns). The parameter travels as a Bind value, never inside the
/// SQL text. Used for auth_query.
///
/// # Errors
/// Socket errors, the server closing, an ErrorResponse, or rows that are not text.
pub async fn run_lookup(
    conn: &mut ServerConn,
    sql: &str,
    param: &str,
) -> Result<Vec<Vec<Option<String>>>, ServerError> {
    let mut out = BytesMut::with_capacity(sql.len() + param.len() + 64);
    build::parse(&mut out, "", sql);
    build::bind(&mut out, "", "", &[Some(param.as_bytes())]);
    build::execute(&mut out, "");
    build::sync(&mut out);
    let leftover = std::mem::take(&mut conn.leftover);
    let mut w = Wire { stream: &mut conn.stream, buf: leftover, out };
    w.flush().await?;
    let mut failure = None;
    let mut rows = Vec::new();
    loop {
        let f = w.read_frame().await?;
        match f.tag {
            tags::backend::ERROR_RESPONSE => failure = Some(rejected(f.body())),
            tags::backend::DATA_ROW => {
                let cols = backend::data_row(f.body())?;
                let row = cols
                    .into_iter()
                    .map(|c| c.map(|v| String::from_utf8(v.to_vec())).transpose())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| ProtocolError::Invalid("auth_query returned a value that is not UTF-8"))?;
                rows.push(row);
            }
            tags::backend::READY_FOR_QUERY => {
                conn.leftover = w.buf;
                return match failure {
                    Some(e) => Err(e),
                    None => Ok(rows),
                };
            }
            _ => {}
        }
    }
}
