//! Where secrets and methods come from besides auth_file: auth_query (md5 and SCRAM roles,
//! pass-through with the looked-up secret, per-database settings, cache invalidation, failing
//! and slow lookups), auth_hba_file (trust on the socket, scram on TCP, one network rejected,
//! reloaded), peer auth with an ident map, and cert auth from the client certificate's name.

use std::time::Duration;

use crate::harness::pgmux::Setup;
use crate::harness::{db_error, Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};
use crate::tls::{client_tls, connect_tls};

async fn who(mux: &Pgmux, user: &str, pass: &str, db: &str) -> Result<String, tokio_postgres::Error> {
    let c = mux.connect(user, pass, db).await?;
    Ok(c.query_one("SELECT current_user::text", &[]).await?.get(0))
}

/// (Re)creates a role with `password` stored as `encryption`.
fn role(pg: &Cluster, name: &str, password: &str, encryption: &str, extra: &str) {
    pg.psql(
        "postgres",
        &format!(
            "SET password_encryption = '{encryption}'; DROP ROLE IF EXISTS {name}; \
             CREATE ROLE {name} LOGIN PASSWORD '{password}' {extra}"
        ),
    );
}

fn auth_query_pgmux(pg: &Cluster, extra: &str) -> Pgmux {
    // Only the auth_user is in userlist.txt; everyone else is looked up.
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let ini = format!("auth_type = md5\nauth_user = {SCRAM_USER}\n{extra}");
    Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: &ini,
            databases: "aqdb = host=$SOCKET port=$PORT dbname=app\n\
                        aqdb2 = host=$SOCKET port=$PORT dbname=app auth_user=scram_user \
                        auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename = $1'\n\
                        slow = host=$SOCKET port=$PORT dbname=app \
                        auth_query='SELECT $1::text, pg_sleep(3)::text'\n\
                        broken = host=$SOCKET port=$PORT dbname=app auth_query='SELECT $1::text, (1/0)::text'\n\
                        viadb = host=$SOCKET port=$PORT dbname=postgres auth_dbname=aqdb\n\
                        nowhere = host=$SOCKET port=$PORT dbname=app auth_dbname=missing",
            userlist: Some(&userlist),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_md5_and_scram_roles() {
    let pg = Cluster::shared();
    role(pg, "aq_scram", "aq-scram-pass", "scram-sha-256", "");
    role(pg, "aq_md5", "aq-md5-pass", "md5", "");
    role(pg, "aq_expired", "aq-expired-pass", "scram-sha-256", "VALID UNTIL '2001-01-01'");
    let mux = auth_query_pgmux(pg, "");
    // SCRAM: the client proves the looked-up verifier, and pgmux logs in to a SCRAM-only
    // socket with the keys from that proof (it never knows the password).
    assert_eq!(who(&mux, "aq_scram", "aq-scram-pass", "aqdb").await.unwrap(), "aq_scram");
    // md5: the looked-up md5 secret answers both the client and the server.
    assert_eq!(who(&mux, "aq_md5", "aq-md5-pass", "aqdb").await.unwrap(), "aq_md5");
    // Per-database auth_query.
    assert_eq!(who(&mux, "aq_md5", "aq-md5-pass", "aqdb2").await.unwrap(), "aq_md5");
    // auth_dbname: the lookup for viadb runs in aqdb's pool of the auth_user.
    assert_eq!(who(&mux, "aq_md5", "aq-md5-pass", "viadb").await.unwrap(), "aq_md5");
    assert!(mux.shared.pools.all().iter().all(|p| !(p.db == "viadb" && p.user == SCRAM_USER)));
    let e = db_error(&who(&mux, "aq_md5", "aq-md5-pass", "nowhere").await.unwrap_err());
    assert_eq!(e, ("08P01".into(), "bouncer config error".into()));
    let wrong = db_error(&who(&mux, "aq_scram", "nope", "aqdb").await.unwrap_err());
    let ghost = db_error(&who(&mux, "aq_ghost", "nope", "aqdb").await.unwrap_err());
    // The default query returns NULL for an expired role: it exists, and no password matches.
    let expired = db_error(&who(&mux, "aq_expired", "aq-expired-pass", "aqdb").await.unwrap_err());
    assert_eq!(wrong, ("08P01".into(), "SASL authentication failed".into()));
    // No row: PgBouncer refuses at once, before asking for a password.
    assert_eq!(ghost, ("08P01".into(), "no such user".into()));
    assert_eq!(expired, ("08P01".into(), "password authentication failed".into()));
    // psql too.
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-h", "127.0.0.1", "-p", &mux.port.to_string(), "-U", "aq_md5", "-d", "aqdb"])
        .args(["-c", "SELECT current_user"])
        .env("PGPASSWORD", "aq-md5-pass")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "aq_md5", "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_sees_password_and_expiry_changes_at_once() {
    let pg = Cluster::shared();
    role(pg, "aq_rotate", "old-pass", "scram-sha-256", "");
    let mux = auth_query_pgmux(pg, "");
    assert_eq!(who(&mux, "aq_rotate", "old-pass", "aqdb").await.unwrap(), "aq_rotate");
    pg.psql("postgres", "SET password_encryption = 'scram-sha-256'; ALTER ROLE aq_rotate PASSWORD 'new-pass'");
    // As PgBouncer, every login asks again: the new password works on the very next login.
    assert_eq!(who(&mux, "aq_rotate", "new-pass", "aqdb").await.unwrap(), "aq_rotate");
    assert!(who(&mux, "aq_rotate", "old-pass", "aqdb").await.is_err());
    pg.psql("postgres", "ALTER ROLE aq_rotate VALID UNTIL '1999-01-01'");
    let expired = db_error(&who(&mux, "aq_rotate", "new-pass", "aqdb").await.unwrap_err());
    assert_eq!(expired, ("08P01".into(), "password authentication failed".into()));
    pg.psql("postgres", "ALTER ROLE aq_rotate VALID UNTIL 'infinity'");
    assert_eq!(who(&mux, "aq_rotate", "new-pass", "aqdb").await.unwrap(), "aq_rotate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_or_slow_auth_query_fails_only_that_login() {
    let pg = Cluster::shared();
    role(pg, "aq_other", "other-pass", "scram-sha-256", "");
    let mux = auth_query_pgmux(pg, "server_connect_timeout = 1");
    let (code, msg) = db_error(&who(&mux, "aq_other", "other-pass", "broken").await.unwrap_err());
    // A query error is a configuration problem to PgBouncer; the reason is in the log.
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "bouncer config error"));
    let started = std::time::Instant::now();
    let (code, msg) = db_error(&who(&mux, "aq_other", "other-pass", "slow").await.unwrap_err());
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "auth_query timed out"));
    assert!(started.elapsed() < Duration::from_secs(3));
    // Everyone else is still served.
    assert_eq!(who(&mux, "aq_other", "other-pass", "aqdb").await.unwrap(), "aq_other");
    assert_eq!(who(&mux, SCRAM_USER, SCRAM_PASS, "aqdb").await.unwrap(), SCRAM_USER);
}

/// tokio-postgres over TCP from a chosen loopback source address.
async fn connect_from(
    mux: &Pgmux,
    source: &str,
    user: &str,
    pass: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = sock.connect(format!("127.0.0.1:{}", mux.port).parse().unwrap()).await.unwrap();
    let cfg: tokio_postgres::Config = format!("user={user} password={pass} dbname=app").parse().unwrap();
    let (c, conn) = cfg.connect_raw(stream, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

async fn over_socket(mux: &Pgmux, user: &str, pass: &str) -> Result<String, tokio_postgres::Error> {
    let pass = if pass.is_empty() { String::new() } else { format!("password={pass}") };
    let url = format!("host={} port={} user={user} {pass} dbname=app", mux.socket_dir().display(), mux.port);
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c.query_one("SELECT current_user::text", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_trusts_local_requires_scram_on_host_and_rejects_a_network() {
    let pg = Cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("hba.conf");
    std::fs::write(
        &hba,
        "local all all trust\nhost all all 127.0.0.2/32 reject\nhost all all 127.0.0.0/8 scram-sha-256\n",
    )
    .unwrap();
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let ini = format!("auth_type = hba\nauth_hba_file = {}", hba.display());
    let mux = Pgmux::start_with(pg, Setup { pgbouncer: &ini, userlist: Some(&userlist), ..Setup::default() });
    // local: trust, no password needed.
    assert_eq!(over_socket(&mux, SCRAM_USER, "").await.unwrap(), SCRAM_USER);
    // 127.0.0.1: scram, the password counts.
    assert!(connect_from(&mux, "127.0.0.1", SCRAM_USER, SCRAM_PASS).await.is_ok());
    let e = db_error(&connect_from(&mux, "127.0.0.1", SCRAM_USER, "wrong").await.err().unwrap());
    assert_eq!(e, ("08P01".into(), "SASL authentication failed".into()));
    // 127.0.0.2: rejected, even with the right password.
    let e = db_error(&connect_from(&mux, "127.0.0.2", SCRAM_USER, SCRAM_PASS).await.err().unwrap());
    assert_eq!(e, ("08P01".into(), "login rejected".into()));
    // RELOAD re-reads the file: now nothing over TCP matches, which PgBouncer words apart.
    std::fs::write(&hba, "local all all trust\n").unwrap();
    pgmux::reload::reload(&mux.shared).unwrap();
    let e = db_error(&connect_from(&mux, "127.0.0.1", SCRAM_USER, SCRAM_PASS).await.err().unwrap());
    assert_eq!(e, ("08P01".into(), "no authentication method is found".into()));
    // A line PgBouncer cannot parse is skipped with a warning, as PgBouncer skips it (a skipped
    // reject rejects nobody); the rest of the file loads.
    std::fs::write(&hba, "local all all trust\nhost all all samenet reject\nhost all all 127.0.0.0/8 scram-sha-256\n")
        .unwrap();
    pgmux::reload::reload(&mux.shared).expect("a line that cannot be used does not fail the reload");
    assert!(connect_from(&mux, "127.0.0.1", SCRAM_USER, SCRAM_PASS).await.is_ok());
    assert_eq!(over_socket(&mux, SCRAM_USER, "").await.unwrap(), SCRAM_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_auth_with_an_ident_map() {
    let pg = Cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hba.conf"), "local all all peer map=ops\n").unwrap();
    // The tests run as root: root may log in as scram_user, nobody else is mapped.
    std::fs::write(dir.path().join("ident.conf"), "ops root scram_user\n").unwrap();
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n\"md5_user\" \"md5-pass\"\n");
    let ini = format!(
        "auth_type = hba\nauth_hba_file = {0}/hba.conf\nauth_ident_file = {0}/ident.conf",
        dir.path().display()
    );
    let mux = Pgmux::start_with(pg, Setup { pgbouncer: &ini, userlist: Some(&userlist), ..Setup::default() });
    assert_eq!(nix::unistd::geteuid().as_raw(), 0, "the tests run as root");
    assert_eq!(over_socket(&mux, SCRAM_USER, "").await.unwrap(), SCRAM_USER);
    let e = db_error(&over_socket(&mux, "md5_user", "md5-pass").await.unwrap_err());
    assert_eq!(e, ("08P01".into(), "unix socket login rejected".into()));
    // peer over TCP does not exist: no line matches.
    let e = db_error(&mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.err().unwrap());
    assert_eq!(e.1, "no authentication method is found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_auth_maps_the_certificate_name() {
    let pg = Cluster::shared();
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n\"md5_user\" \"md5-pass\"\n");
    let ini = format!("auth_type = cert\n{}", client_tls("verify-full"));
    let mux = Pgmux::start_with(pg, Setup { pgbouncer: &ini, userlist: Some(&userlist), ..Setup::default() });
    let c = connect_tls(&mux, &format!("user={SCRAM_USER} dbname=app"), Some(SCRAM_USER)).await.unwrap();
    let me: String = c.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(me, SCRAM_USER);
    // As PgBouncer, a subjectAltName DNS name is a name the certificate is for too (this one's
    // common name is someone else's).
    let c = connect_tls(&mux, "user=md5_user dbname=app", Some("san")).await.unwrap();
    let me: String = c.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(me, "md5_user");
    // A valid certificate for someone else.
    let e = db_error(&connect_tls(&mux, "user=md5_user dbname=app", Some("intruder")).await.err().unwrap());
    assert_eq!(e, ("08P01".into(), "certificate authentication failed".into()));
    // verify-full: no certificate, no handshake.
    assert!(connect_tls(&mux, &format!("user={SCRAM_USER} dbname=app"), None).await.is_err());
    // psql with sslcert/sslkey.
    let certs = crate::harness::Certs::shared();
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-c", "SELECT current_user", "-d"])
        .arg(format!(
            "host=localhost hostaddr=127.0.0.1 port={} user={SCRAM_USER} dbname=app sslmode=verify-full \
             sslrootcert={} sslcert={} sslkey={}",
            mux.port,
            certs.path("ca.crt"),
            certs.path("client-scram_user.crt"),
            certs.path("client-scram_user.key")
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SCRAM_USER, "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_cert_line_with_map_over_hostssl() {
    let pg = Cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hba.conf"),
        "hostssl all all 127.0.0.1/32 cert map=certs\nhost all all all reject\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("ident.conf"), "certs intruder md5_user\n").unwrap();
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n\"md5_user\" \"md5-pass\"\n");
    let ini = format!(
        "auth_type = hba\nauth_hba_file = {0}/hba.conf\nauth_ident_file = {0}/ident.conf\n{1}",
        dir.path().display(),
        client_tls("allow")
    );
    let mux = Pgmux::start_with(pg, Setup { pgbouncer: &ini, userlist: Some(&userlist), ..Setup::default() });
    let c = connect_tls(&mux, "user=md5_user dbname=app", Some("intruder")).await.unwrap();
    let me: String = c.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(me, "md5_user");
    // Without TLS the hostssl line does not match; the next one rejects.
    let e = db_error(&mux.connect("md5_user", "md5-pass", "app").await.err().unwrap());
    assert_eq!(e.1, "login rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_decides_who_exists_before_the_method() {
    let pg = Cluster::shared();
    // A role without a password: auth_query returns a row with a NULL secret.
    pg.psql("postgres", "DROP ROLE IF EXISTS aq_nopass; CREATE ROLE aq_nopass LOGIN");
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: &format!("auth_type = trust\nauth_user = {SCRAM_USER}"),
            databases: "aqdb = host=$SOCKET port=$PORT dbname=app user=postgres\n\
                        offdb = host=$SOCKET port=$PORT dbname=app auth_dbname=authoff\n\
                        authoff = host=$SOCKET port=$PORT dbname=app",
            userlist: Some(&userlist),
        },
    );
    // Trust: a role that exists (NULL secret) logs in, one that does not is refused by name.
    assert_eq!(who(&mux, "aq_nopass", "", "aqdb").await.unwrap(), "postgres");
    let ghost = db_error(&who(&mux, "aq_nobody", "", "aqdb").await.unwrap_err());
    assert_eq!(ghost, ("08P01".into(), "no such user".into()));
    // A disabled auth database is named, as PgBouncer does.
    let url = format!("host={} port={} user=pgbouncer dbname=pgbouncer", mux.socket_dir().display(), mux.port);
    let (console, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    console.simple_query("DISABLE authoff").await.unwrap();
    let off = db_error(&who(&mux, "aq_nopass", "", "offdb").await.unwrap_err());
    assert_eq!(off, ("08P01".into(), "authentication database \"authoff\" is disabled".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logins_use_auth_query_and_count_in_show_stats() {
    let pg = Cluster::shared();
    role(pg, "aq_stats", "aq-stats-pass", "scram-sha-256", "");
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: &format!(
                "auth_type = md5\nauth_user = {SCRAM_USER}\nauth_dbname = aqdb\nstats_users = aq_stats"
            ),
            databases: "aqdb = host=$SOCKET port=$PORT dbname=app",
            userlist: Some(&userlist),
        },
    );
    assert_eq!(who(&mux, "aq_stats", "aq-stats-pass", "aqdb").await.unwrap(), "aq_stats");
    let console = mux.connect("aq_stats", "aq-stats-pass", "pgbouncer").await.expect("stats user via auth_query");
    let rows = console.simple_query("SHOW STATS").await.unwrap();
    let logins: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("aqdb") => {
                r.get("total_client_login_count").map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    assert_eq!(logins, ["1"], "one pooled login to aqdb");
    let wrong = db_error(&mux.connect("aq_stats", "nope", "pgbouncer").await.unwrap_err());
    assert_eq!(wrong, ("08P01".into(), "SASL authentication failed".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_passwords_are_read_and_refused_as_wrong() {
    let pg = Cluster::shared();
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let mux =
        Pgmux::start_with(pg, Setup { pgbouncer: "auth_type = plain", userlist: Some(&userlist), ..Setup::default() });
    let long = "X".repeat(70_000);
    let e = db_error(&who(&mux, SCRAM_USER, &long, "app").await.unwrap_err());
    assert_eq!(e, ("08P01".into(), "password authentication failed".into()));
    assert_eq!(who(&mux, SCRAM_USER, SCRAM_PASS, "app").await.unwrap(), SCRAM_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pigsty_console_login_by_peer_for_an_empty_userlist_password() {
    let pg = Cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    // Pigsty's pgb_hba.conf first line and userlist entry for the dbsu; the tests run as root, so
    // an ident map stands in for the OS user `postgres`. auth_user is set and must not be asked:
    // a user listed in auth_file exists as listed.
    std::fs::write(
        dir.path().join("hba.conf"),
        "local pgbouncer postgres peer map=dbsu\nlocal all all scram-sha-256\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("ident.conf"), "dbsu root postgres\n").unwrap();
    let userlist = format!("\"postgres\" \"\"\n\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let ini = format!(
        "auth_type = hba\nauth_hba_file = {0}/hba.conf\nauth_ident_file = {0}/ident.conf\nadmin_users = postgres\n\
         auth_user = {SCRAM_USER}",
        dir.path().display()
    );
    let mux = Pgmux::start_with(pg, Setup { pgbouncer: &ini, userlist: Some(&userlist), ..Setup::default() });
    let url = format!("host={} port={} user=postgres dbname=pgbouncer", mux.socket_dir().display(), mux.port);
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("peer login to the console");
    tokio::spawn(conn);
    let rows = c.simple_query("SHOW VERSION").await.unwrap();
    assert!(rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))));
}
