//! From the first packet to ReadyForQuery: startup, limits, authentication, database lookup,
//! the pool, and the welcome (the first server's ParameterStatus values with the client's own
//! tracked values, pgmux's BackendKeyData, ReadyForQuery).

use std::sync::Arc;

use pgmux_protocol::startup::StartupPacket;
use pgmux_protocol::{build, sqlstate};

use super::auth::{authenticate, AuthPlan};
use super::limits;
use super::params::ClientParams;
use super::registration::Registration;
use super::startup::{accept_params, negotiate, read_opening};
use super::ClientError;
use crate::auth::query::{self, Answer, LookupError, LookupPlan};
use crate::auth::ConnKind;
use crate::cancel::CancelSlot;
use crate::client_counts::Counted;
use crate::clients::Labels;
use crate::config::AuthType;
use crate::config::{Config, StoredSecret};
use crate::logging::ConnTag;
use crate::net::client_io::ClientIo;
use crate::net::PeerAddr;
use crate::pool::{Caller, CheckoutError, Lease, Pool};
use crate::replication::Replication;
use crate::server::{ServerError, ServerParams};
use crate::shared::{RunState, Shared};
use crate::tls::SslMode;

/// PgBouncer's room for a user name (a longer one is refused) and for a database name (a
/// longer one is cut), with their NULs.
const MAX_USERNAME: usize = 128;
const MAX_DBNAME: usize = 64;

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What a login led to.
#[derive(Debug)]
pub enum Login {
    /// A pooled session, and a replication client's own server (held for the whole session and
    /// closed at its end).
    Session(Session, Option<Box<Lease>>),
    /// The admin console, registered as a client of database `pgbouncer` (its ClientInfo also
    /// holds its place in the client counts).
    Admin(crate::admin::Access, Arc<crate::clients::ClientInfo>),
}

/// A logged-in client, ready for the relay.
#[derive(Debug)]
pub struct Session {
    /// Its registrations, given back when the session is dropped (boxed: every idle client's
    /// task holds its session).
    pub registration: Box<Registration>,
    /// Its pool.
    pub pool: Arc<Pool>,
    /// Its tracked parameters.
    pub params: ClientParams,
    /// Where cancels for it go.
    pub cancel: Arc<CancelSlot>,
    /// Its entry in the client registry.
    pub info: Arc<crate::clients::ClientInfo>,
}

impl Session {
    /// Its log prefix (`C-0x1a: p0/alice@127.0.0.1:41234`), kept once, in its registry entry.
    pub fn tag(&self) -> &ConnTag {
        &self.info.tag
    }

    /// Its address, kept once, in its registry entry.
    pub fn peer(&self) -> &PeerAddr {
        &self.info.addr
    }
}

/// The message a client gets when no server can be had for it.
/// A server's refusal of a login reaches the client with the server's SQLSTATE and message;
/// clients that arrive while logins keep failing get PgBouncer's cached-error text.
pub fn checkout_error_message(e: &CheckoutError) -> (&'static str, String) {
    let passed_on = |code: &str| sqlstate::known(code).unwrap_or(sqlstate::PROTOCOL_VIOLATION);
    match e {
        CheckoutError::QueryWaitTimeout => (sqlstate::PROTOCOL_VIOLATION, "query_wait_timeout".into()),
        CheckoutError::LoginFailing(..) => (sqlstate::PROTOCOL_VIOLATION, e.to_string()),
        CheckoutError::ShuttingDown => (sqlstate::ADMIN_SHUTDOWN, e.to_string()),
        CheckoutError::Refused(r) => (passed_on(&r.sqlstate), r.message.clone()),
        CheckoutError::Connect(ServerError::Rejected { sqlstate, message, .. }) => {
            (passed_on(sqlstate), message.clone())
        }
        CheckoutError::Connect(ServerError::Auth(_)) => {
            (sqlstate::PROTOCOL_VIOLATION, "server login failed: wrong password type".into())
        }
        CheckoutError::Connect(inner) => (
            sqlstate::PROTOCOL_VIOLATION,
            format!("server login has been failing, cached error: {} (server_login_retry)", inner.log_reason()),
        ),
    }
}

/// Runs the login. `Ok(None)` for a handled CancelRequest.
///
/// # Errors
/// `Refused` with the message to send; other variants when the client went away.
pub async fn login(
    shared: &Arc<Shared>,
    config: &Config,
    io: &mut ClientIo,
    peer: &PeerAddr,
    client_number: usize,
    tag: &mut Box<ConnTag>,
    deadline: tokio::time::Instant,
) -> Result<Option<Login>, ClientError> {
    let g = &config.general;
    // Its place in the per-database and per-user client counts: given back when a refused login
    // returns (before the client hears why, as PgBouncer), else kept with the client.
    let mut counted = Counted::default();
    let counted = &mut counted;
    let (version, raw) = match read_opening(io, config.client_tls.as_ref()).await? {
        StartupPacket::Cancel { pid, secret } => {
            let started = std::time::Instant::now();
            let from = crate::cancel_rows::Requester {
                id: tag.id,
                ends: crate::clients::Ends::of(peer, &io.stream),
                connect_time: std::time::SystemTime::now(),
                tls: io.tls.as_ref().map(|t| t.description.clone()).unwrap_or_default(),
            };
            if let Err(failed) = shared.cancels.cancel((pid, secret), config, from).await {
                if g.log_disconnections {
                    if let Some(db) = &failed.db {
                        tag.set_login(db, "(nouser)");
                    }
                    let age = started.elapsed().as_secs();
                    crate::conn_log!(info, tag, "closing because: {} (age={age}s)", failed.reason);
                }
            }
            return Ok(None);
        }
        StartupPacket::Startup { version, params } => (version, params),
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            unreachable!("answered by read_opening")
        }
    };
    let tls_required = config.client_tls.as_ref().is_some_and(|t| t.mode >= SslMode::Require);
    if tls_required && io.tls.is_none() && !matches!(peer, PeerAddr::Unix(_)) {
        return Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "SSL required".into()));
    }
    let mut req = accept_params(version, raw, g)?;
    negotiate(io, &req);
    tag.set_login(&req.database, &req.user);
    limits::check_client_conn(config, client_number, &req.database)?;
    let admin_db = req.database == crate::config::ADMIN_DB;
    // The console without a password: user pgbouncer over the unix socket from pgmux's own uid.
    let console_trusted = admin_db
        && crate::admin::passwordless(shared, &req.user, io.stream.peer_uid() == Some(nix::unistd::geteuid().as_raw()));
    let db = if admin_db {
        limits::count_db(shared, config, counted, &req.database, None, &req.user)?;
        if !console_trusted && limits::known_user(shared, config, &req.user) {
            limits::count_user(shared, config, counted, &req.database, &req.user)?;
        }
        None
    } else {
        let db = config.database(&req.database);
        if let Some(d) = &db {
            limits::count_db(shared, config, counted, &d.name, d.max_db_client_connections, &req.user)?;
        }
        // auth_type = any logs everyone in as the database's forced user.
        let login_user = match (&db, g.auth_type) {
            (Some(d), AuthType::Any) => d.user.as_deref().unwrap_or(&req.user),
            _ => &req.user,
        };
        if limits::known_user(shared, config, login_user) {
            limits::count_user(shared, config, counted, &req.database, login_user)?;
        }
        db
    };
    if req.user.len() >= MAX_USERNAME && !console_trusted {
        // As PgBouncer, before the login is logged and any password asked for (its user
        // names live in 128 bytes); the console's trusted login excepted, as there.
        if g.log_connections {
            crate::conn_log!(info, tag, "login failed: db={} user={}", req.database, req.user);
        }
        return Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "username too long".into()));
    }
    if g.log_connections {
        let tls = io.tls.as_ref().map(|t| t.description.as_str()).unwrap_or("no");
        let replication = req.replication.as_ref().map_or("no", |(kind, _)| kind.log_word());
        crate::conn_log!(
            info,
            tag,
            "login attempt: db={} user={} tls={tls} replication={replication}",
            req.database,
            req.user
        );
    }
    if admin_db {
        let access = if console_trusted {
            crate::admin::Access::Admin
        } else {
            let (method, map) = decide_method(config, io, peer, &req.database, &req.user, false)?;
            let known = if needs_lookup(config, &req.user) && method != AuthType::Any {
                let plan = LookupPlan::for_console(shared, config).map_err(|e| lookup_refusal(e, tag))?;
                let known = find_user(shared, config, plan, &req.user, tag).await?;
                if known.looked_up {
                    limits::count_user(shared, config, counted, &req.database, &req.user)?;
                }
                known
            } else {
                Known::from_file(config, &req.user)
            };
            let plan = AuthPlan {
                method,
                map: map.as_deref(),
                user: &req.user,
                secret: known.secret.as_ref(),
                exists: known.exists,
                ident: &config.ident,
                mock_key: &shared.mock_key,
                scram_iterations: g.scram_iterations,
                tag,
            };
            authenticate(io, &plan).await?;
            crate::admin::access_of(shared, &req.user)?
        };
        // The parameters the client set that PgBouncer tracks, echoed in its order; with
        // application_name_add_host the client's application is named as any client's.
        let mut echoed = Vec::new();
        let standard = ["DateStyle", "client_encoding", "TimeZone", "standard_conforming_strings", "application_name"];
        for name in standard.iter().copied().chain(g.track_extra_parameters.iter().map(String::as_str)) {
            let value = match req.params.get(name) {
                _ if name == "application_name" && g.application_name_add_host => {
                    Some(format!("{} - {peer}", req.params.get(name).unwrap_or("app")))
                }
                v => v.map(str::to_owned),
            };
            if let Some(v) = value {
                echoed.push((name, v));
            }
        }
        crate::admin::welcome(&mut io.wbuf, &echoed, &g.login_notify_message);
        io.flush().await?;
        crate::pool::PoolStats::add(&shared.admin_stats.client_login_count, 1);
        let app = req.params.get("application_name").unwrap_or("").to_owned();
        let tls = io.tls.as_ref().map(|t| t.description.as_str()).unwrap_or("");
        let ends = crate::clients::Ends::of(peer, &io.stream);
        let labels = Labels { application_name: &app, tls, ..Default::default() };
        let info = shared.client_registry.register(tag, &req.user, &ends, labels, std::mem::take(counted));
        return Ok(Some(Login::Admin(access, info)));
    }
    if g.auth_type == crate::config::AuthType::Any && db.as_ref().is_some_and(|d| d.user.is_none()) {
        // PgBouncer's words to the client; the reason goes to the log.
        crate::conn_log!(error, tag, "auth_type=any requires forced user");
        return Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "bouncer config error".into()));
    }
    let replication = req.replication.as_ref().map_or(Replication::None, |(kind, _)| *kind);
    let physical = replication == Replication::Physical;
    let (method, map) = decide_method(config, io, peer, &req.database, &req.user, physical)?;
    let known = match &db {
        Some(db) if needs_lookup(config, &req.user) && method != AuthType::Any => {
            let plan = LookupPlan::for_database(shared, config, db).map_err(|e| lookup_refusal(e, tag))?;
            let known = find_user(shared, config, plan, &req.user, tag).await?;
            if known.looked_up {
                // A user auth_query found counts from now on, as PgBouncer's dynamic users.
                limits::count_user(shared, config, counted, &req.database, &req.user)?;
            }
            known
        }
        _ => Known::from_file(config, &req.user),
    };
    let plan = AuthPlan {
        method,
        map: map.as_deref(),
        user: &req.user,
        secret: known.secret.as_ref(),
        exists: known.exists,
        ident: &config.ident,
        mock_key: &shared.mock_key,
        scram_iterations: g.scram_iterations,
        tag,
    };
    let authed = authenticate(io, &plan).await?;
    let Some(db) = db else {
        if g.log_connections {
            crate::conn_log!(info, tag, "login failed: db={} user={}", req.database, req.user);
        }
        // PgBouncer names it as it keeps it: in 63 bytes, as PostgreSQL keeps names.
        let name = truncated(&req.database, MAX_DBNAME - 1);
        return Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, format!("no such database: {name}")));
    };
    // During an online restart a login that was under way finishes here and then moves.
    if !matches!(shared.state(), RunState::Running | RunState::TakenOver) {
        // The console stays reachable on the unix socket until the process exits; databases
        // do not (PgBouncer's check at the end of login).
        return Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "pooler is shutting down".into()));
    }
    if shared.pools.is_disabled(&db.name) {
        return Err(ClientError::Refused(
            sqlstate::PROTOCOL_VIOLATION,
            format!("database \"{}\" is disabled", db.name),
        ));
    }
    if db.auto && !shared.pools.knows_db(&db.name) {
        crate::conn_log!(info, tag, "registered new auto-database: {}", db.name);
    }
    let pool_user = db.user.clone().unwrap_or_else(|| req.user.clone());
    let pool = shared.pools.get_or_create(config, &db, &pool_user);
    if !pool.settings().forced_user {
        if let Some(keys) = authed.scram_keys {
            pool.set_scram_keys(keys);
        }
        if let (true, Some(secret)) = (known.looked_up, known.secret) {
            pool.set_looked_up_secret(secret);
        }
    }
    // A replication client gets its own server now, and sees that server's parameters.
    let dedicated = match req.replication.take() {
        Some((_, params)) => {
            let settings = pool.settings();
            match Box::pin(pool.open_dedicated(&settings, &params)).await {
                Ok(server) => Some(Box::new(server)),
                Err(e) => {
                    let (code, msg) = checkout_error_message(&e);
                    return Err(ClientError::Refused(code, msg));
                }
            }
        }
        None => None,
    };
    let welcome = match (&dedicated, pool.welcome()) {
        (Some(server), _) => Arc::new(server.params.clone()),
        (None, Some(w)) => w,
        (None, None) => first_server_params(&pool, tag, deadline).await?,
    };
    if g.application_name_add_host {
        // A client that names no application is `app`, as PgBouncer names it.
        let base = req.params.get("application_name").unwrap_or("app").to_owned();
        req.params.set("application_name", &format!("{base} - {peer}"));
    }
    build::auth_ok(&mut io.wbuf);
    super::welcome::settle(&mut req.params, &welcome, &mut io.wbuf);
    let (cancel_key, cancel) = shared.cancels.register(g.peer_id);
    // From here on the guard undoes every registration, whatever way the client leaves.
    let mut registration = Box::new(Registration::new(shared, &pool, cancel_key));
    cancel.belongs_to((&req.database, &pool.user), &pool.cancels);
    build::backend_key_data(&mut io.wbuf, cancel_key.0, cancel_key.1);
    if !g.login_notify_message.is_empty() {
        // As PgBouncer's welcome: a NOTICE between BackendKeyData and ReadyForQuery.
        build::error_response(
            &mut io.wbuf,
            build::Severity::Notice,
            sqlstate::SUCCESSFUL_COMPLETION,
            &g.login_notify_message,
        );
    }
    build::ready_for_query(&mut io.wbuf, b'I');
    io.flush().await?;
    registration.count_in_pool();
    crate::pool::PoolStats::add(&pool.counters.here().stats.client_login_count, 1);
    let app = req.params.get("application_name").unwrap_or("").to_owned();
    let tls = io.tls.as_ref().map(|t| t.description.as_str()).unwrap_or("");
    let ends = crate::clients::Ends::of(peer, &io.stream);
    let labels = Labels { application_name: &app, tls, replication };
    let info = shared.client_registry.register(tag, &pool.user, &ends, labels, std::mem::take(counted));
    registration.registered_as(info.id);
    Ok(Some(Login::Session(Session { registration, pool, params: req.params, cancel, info }, dedicated)))
}

/// The method for this connection: auth_type, or with `hba` the first matching line's method
/// and `map=`.
///
/// # Errors
/// No HBA line matches (PgBouncer's `no authentication method is found`).
fn decide_method(
    config: &Config,
    io: &ClientIo,
    peer: &PeerAddr,
    database: &str,
    user: &str,
    physical_replication: bool,
) -> Result<(AuthType, Option<String>), ClientError> {
    if config.general.auth_type != AuthType::Hba {
        return Ok((config.general.auth_type, None));
    }
    let conn = match peer {
        PeerAddr::Unix(_) => ConnKind::Local,
        PeerAddr::Tcp(a) => ConnKind::Host { addr: a.ip().to_canonical(), tls: io.tls.is_some() },
    };
    match config.hba.as_ref().and_then(|h| h.find(conn, database, user, physical_replication)) {
        Some(rule) => Ok((rule.method, rule.map.clone())),
        None => Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "no authentication method is found".into())),
    }
}

/// What pgmux knows of a login user before the exchange.
struct Known {
    /// Its secret, when it has one.
    secret: Option<StoredSecret>,
    /// False for a user nobody knows: the exchange runs with a mock secret and fails.
    exists: bool,
    /// The secret came from auth_query (the pool logs in to servers with it).
    looked_up: bool,
}

impl Known {
    fn from_file(config: &Config, user: &str) -> Self {
        let secret = config.auth_file.get(user).cloned();
        Known { exists: secret.is_some(), secret, looked_up: false }
    }
}

/// True when auth_query decides about `user`: it is not in auth_file. A user listed there with
/// an empty password (`"postgres" ""` on a Pigsty node) exists as listed, for peer and trust
/// logins, as PgBouncer reads auth_file.
fn needs_lookup(config: &Config, user: &str) -> bool {
    !config.auth_file.contains_key(user)
}

/// Runs auth_query when a plan applies; no row refuses the login at once with `no such user`,
/// before any password is asked for, as PgBouncer does.
async fn find_user(
    shared: &Arc<Shared>,
    config: &Config,
    plan: Option<LookupPlan>,
    user: &str,
    tag: &ConnTag,
) -> Result<Known, ClientError> {
    let Some(plan) = plan else {
        if config.general.log_connections && !config.auth_file.contains_key(user) {
            crate::conn_log!(info, tag, "no such user: {user}");
        }
        return Ok(Known::from_file(config, user));
    };
    match Box::pin(query::lookup(shared, config, &plan, user)).await.map_err(|e| lookup_refusal(e, tag))? {
        Answer::NoSuchUser => {
            if config.general.log_connections {
                crate::conn_log!(info, tag, "login failed: db={}", plan.auth_db.name);
            }
            Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, "no such user".into()))
        }
        Answer::Exists(secret) => Ok(Known { secret, exists: true, looked_up: true }),
    }
}

/// What a client is told when auth_query cannot answer, in PgBouncer's words; the reason goes
/// to the log.
fn lookup_refusal(e: LookupError, tag: &ConnTag) -> ClientError {
    let (code, msg) = match e {
        LookupError::Config(reason) => {
            crate::conn_log!(error, tag, "{reason}");
            (sqlstate::PROTOCOL_VIOLATION, "bouncer config error".to_owned())
        }
        LookupError::Failed(reason) => {
            tracing::error!("error in auth_query: {reason}");
            (sqlstate::PROTOCOL_VIOLATION, "bouncer config error".to_owned())
        }
        LookupError::Server(code, msg) => {
            let code = sqlstate::known(&code).unwrap_or(sqlstate::PROTOCOL_VIOLATION);
            (code, msg)
        }
        e @ (LookupError::Disabled(_) | LookupError::Timeout) => (sqlstate::PROTOCOL_VIOLATION, e.to_string()),
    };
    ClientError::Refused(code, msg)
}

/// No server of this pool has been seen yet: open one to learn the server's parameters. The
/// wait is bounded as PgBouncer's janitor bounds a client waiting for its welcome: by
/// query_timeout, query_wait_timeout (a PAUSE included) and client_login_timeout (`deadline`),
/// whichever passes first.
async fn first_server_params(
    pool: &Arc<Pool>,
    tag: &ConnTag,
    deadline: tokio::time::Instant,
) -> Result<Arc<ServerParams>, ClientError> {
    let settings = pool.settings();
    let now = tokio::time::Instant::now();
    let mut bound = (deadline, "client_login_timeout (server down)");
    for (limit, what) in
        [(settings.query_wait_timeout, "query_wait_timeout"), (settings.query_timeout, "query_timeout")]
    {
        if !limit.is_zero() && now + limit <= bound.0 {
            bound = (now + limit, what);
        }
    }
    let queued = QueuedLogin::new(pool);
    let checkout = match tokio::time::timeout_at(bound.0, pool.checkout_with(&settings, Some(tag), Caller::Login)).await
    {
        Ok(r) => r,
        Err(_) => return Err(ClientError::Refused(sqlstate::PROTOCOL_VIOLATION, bound.1.into())),
    };
    drop(queued);
    match checkout {
        // As PgBouncer, which passes a server's refusal to every client waiting for the pool's
        // first welcome: the server's SQLSTATE and words, not the cached-error text.
        Err(CheckoutError::LoginFailing(_, Some(r))) => {
            let code = sqlstate::known(&r.sqlstate).unwrap_or(sqlstate::PROTOCOL_VIOLATION);
            Err(ClientError::Refused(code, r.message.clone()))
        }
        Ok(server) => {
            // The wait counts in the pool's wait time, as PgBouncer counts a client woken from
            // waiting for its welcome (no assignment: the server goes back to the pool).
            let waited = now.elapsed().as_micros() as u64;
            crate::pool::PoolStats::add(&pool.counters.here().stats.wait_time_us, waited);
            let params = Arc::new(server.params.clone());
            server.release();
            Ok(pool.welcome().unwrap_or(params))
        }
        Err(e) => {
            let (code, msg) = checkout_error_message(&e);
            Err(ClientError::Refused(code, msg))
        }
    }
}

/// A login waiting for its pool's first server: a client of the pool, waiting (SHOW POOLS'
/// `cl_waiting`, as PgBouncer lists it), until the wait ends either way.
struct QueuedLogin<'a>(&'a Pool);

impl<'a> QueuedLogin<'a> {
    fn new(pool: &'a Pool) -> Self {
        pool.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        pool.logins_waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(pool)
    }
}

impl Drop for QueuedLogin<'_> {
    fn drop(&mut self) {
        self.0.logins_waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
