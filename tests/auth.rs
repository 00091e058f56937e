//! Client and server authentication: SCRAM, md5, plain, trust; SCRAM pass-through to a server
//! that demands scram-sha-256 on its unix socket; PgBouncer's errors for bad logins.

use std::process::Command;

use crate::harness::pgmux::Setup;
use crate::harness::{db_error, run, Cluster, Pgmux, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

async fn who(mux: &Pgmux, user: &str, pass: &str, db: &str) -> Result<String, tokio_postgres::Error> {
    let c = mux.connect(user, pass, db).await?;
    Ok(c.query_one("SELECT current_user::text", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_to_scram_only_server_over_unix_socket() {
    let pg = Cluster::shared();
    // userlist.txt holds only the SCRAM secret copied from pg_authid: pgmux cannot know the
    // password, so it must log in to PostgreSQL with the keys from the client's proof.
    let secret = pg.secret_of(SCRAM_USER);
    assert!(secret.starts_with("SCRAM-SHA-256$"));
    let userlist = format!("\"{SCRAM_USER}\" \"{secret}\"\n");
    let mux = Pgmux::start_with(
        pg,
        Setup { databases: "app = host=$SOCKET port=$PORT", userlist: Some(&userlist), ..Setup::default() },
    );
    assert_eq!(who(&mux, SCRAM_USER, SCRAM_PASS, "app").await.unwrap(), SCRAM_USER);
    // A second client reuses the pool's servers; a third after the servers were closed logs in
    // again with the stored keys.
    assert_eq!(who(&mux, SCRAM_USER, SCRAM_PASS, "app").await.unwrap(), SCRAM_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_client_and_md5_server() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "auth_type = md5");
    assert!(pg.secret_of(MD5_USER).starts_with("md5"));
    assert_eq!(who(&mux, MD5_USER, MD5_PASS, "app").await.unwrap(), MD5_USER);
    // auth_type md5 with a SCRAM secret upgrades the client to SCRAM, as PgBouncer does.
    assert_eq!(who(&mux, SCRAM_USER, SCRAM_PASS, "app").await.unwrap(), SCRAM_USER);
    let (code, msg) = db_error(&who(&mux, MD5_USER, "wrong", "app").await.unwrap_err());
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "password authentication failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_passwords_in_userlist_work_for_every_method() {
    let pg = Cluster::shared();
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n\"{MD5_USER}\" \"{MD5_PASS}\"\n");
    for auth in ["scram-sha-256", "md5", "plain"] {
        let mux = Pgmux::start_with(
            pg,
            Setup { pgbouncer: &format!("auth_type = {auth}"), userlist: Some(&userlist), ..Setup::default() },
        );
        assert_eq!(who(&mux, SCRAM_USER, SCRAM_PASS, "app").await.unwrap(), SCRAM_USER, "{auth}");
        assert_eq!(who(&mux, MD5_USER, MD5_PASS, "app").await.unwrap(), MD5_USER, "{auth}");
        let (code, msg) = db_error(&who(&mux, SCRAM_USER, "nope", "app").await.unwrap_err());
        let expected =
            if auth == "scram-sha-256" { "SASL authentication failed" } else { "password authentication failed" };
        assert_eq!((code.as_str(), msg.as_str()), ("08P01", expected), "{auth}");
    }
}

/// A plain-text password answers SCRAM through a secret made once (PBKDF2 is the costly part
/// of a login); a changed password in the auth_file, after RELOAD, makes a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_password_changed_on_reload_is_the_one_scram_accepts() {
    let pg = Cluster::shared();
    // The database logs in to PostgreSQL as the SCRAM role; clients log in with the auth_file.
    let databases = format!("app = host=$SOCKET port=$PORT user={SCRAM_USER} password={SCRAM_PASS}");
    let mux = Pgmux::start_with(
        pg,
        Setup { databases: &databases, userlist: Some("\"alice\" \"one\"\n"), pgbouncer: "admin_users = alice" },
    );
    for _ in 0..2 {
        assert_eq!(who(&mux, "alice", "one", "app").await.unwrap(), SCRAM_USER);
    }
    let refused = |e: tokio_postgres::Error| db_error(&e);
    let sasl_failed = ("08P01".to_owned(), "SASL authentication failed".to_owned());
    assert_eq!(refused(who(&mux, "alice", "two", "app").await.unwrap_err()), sasl_failed);
    let console = mux.connect("alice", "one", "pgbouncer").await.unwrap();
    std::fs::write(mux.dir.path().join("userlist.txt"), "\"alice\" \"two\"\n").unwrap();
    console.simple_query("RELOAD").await.unwrap();
    assert_eq!(who(&mux, "alice", "two", "app").await.unwrap(), SCRAM_USER);
    assert_eq!(refused(who(&mux, "alice", "one", "app").await.unwrap_err()), sasl_failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_look_the_same() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "");
    let (c1, m1) = db_error(&who(&mux, SCRAM_USER, "wrong", "app").await.unwrap_err());
    let (c2, m2) = db_error(&who(&mux, "ghost", "wrong", "app").await.unwrap_err());
    assert_eq!((c1.as_str(), m1.as_str()), ("08P01", "SASL authentication failed"));
    assert_eq!((c2.as_str(), m2.as_str()), ("08P01", "SASL authentication failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_refused_after_auth() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(pg, Setup { databases: "app = host=$SOCKET port=$PORT", ..Setup::default() });
    let (code, msg) = db_error(&who(&mux, SCRAM_USER, SCRAM_PASS, "nope").await.unwrap_err());
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "no such database: nope"));
    // A name is kept in 63 bytes (PgBouncer's and PostgreSQL's room), cut at a character.
    let long = format!("{}é", "d".repeat(62));
    let (_, msg) = db_error(&who(&mux, SCRAM_USER, SCRAM_PASS, &long).await.unwrap_err());
    assert_eq!(msg, format!("no such database: {}", "d".repeat(62)));
    // A user name of 128 bytes or more is refused before any password is asked for.
    let (code, msg) = db_error(&who(&mux, &"u".repeat(128), "unused", "app").await.unwrap_err());
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "username too long"));
    let (_, msg) = db_error(&who(&mux, &"u".repeat(127), "wrong", "app").await.unwrap_err());
    assert_eq!(msg, "SASL authentication failed", "127 bytes fit");
    let (_, msg) = db_error(&who(&mux, &"u".repeat(128), "unused", "pgbouncer").await.unwrap_err());
    assert_eq!(msg, "username too long", "the console's logins too");
    // With `*`, a name PgBouncer cannot keep is no database (PostgreSQL would cut it to 63
    // bytes and connect to that one).
    let star = Pgmux::start(pg, "");
    let (_, msg) = db_error(&who(&star, SCRAM_USER, SCRAM_PASS, &format!("app{}", "x".repeat(61))).await.unwrap_err());
    assert_eq!(msg, format!("no such database: app{}", "x".repeat(60)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_needs_the_user_in_auth_file_and_forced_user_works() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust",
            databases: &format!("forced = host=$SOCKET port=$PORT dbname=app user={SCRAM_USER} password={SCRAM_PASS}\n* = host=$SOCKET port=$PORT"),
            userlist: Some(&format!("\"alice\" \"\"\n\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n")),
        },
    );
    // alice is in auth_file; the forced user logs in to PostgreSQL for her.
    assert_eq!(who(&mux, "alice", "any", "forced").await.unwrap(), SCRAM_USER);
    // PgBouncer's words for a user trust cannot vouch for.
    let e = db_error(&who(&mux, "mallory", "any", "forced").await.unwrap_err());
    assert_eq!(e, ("08P01".into(), "\"trust\" authentication failed".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncers_words_for_a_config_it_cannot_serve() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = any\nquery_wait_timeout = 1\nserver_login_retry = 30",
            databases: &format!(
                "forced = host=$SOCKET port=$PORT dbname=app user={SCRAM_USER} password={SCRAM_PASS}\n\
                 unforced = host=$SOCKET port=$PORT dbname=app\n\
                 nosocket = host=/nonexistent/pgmux-test port=$PORT dbname=app user={SCRAM_USER}"
            ),
            ..Setup::default()
        },
    );
    assert_eq!(who(&mux, "anyone", "", "forced").await.unwrap(), SCRAM_USER);
    // auth_type = any needs a forced user: the client hears PgBouncer's words, the log the reason.
    let e = db_error(&who(&mux, "anyone", "", "unforced").await.unwrap_err());
    assert_eq!(e, ("08P01".into(), "bouncer config error".into()));
    // A unix socket that is not there: the first client waits for it in vain, the next one gets
    // the cached error at once, a failed connect, not a failed name lookup.
    let e = db_error(&who(&mux, "anyone", "", "nosocket").await.unwrap_err());
    assert_eq!(e, ("08P01".into(), "query_wait_timeout".into()));
    let e = db_error(&who(&mux, "anyone", "", "nosocket").await.unwrap_err());
    assert_eq!(
        e,
        ("08P01".into(), "server login has been failing, cached error: connect failed (server_login_retry)".into())
    );
}

#[test]
fn psql_over_the_unix_socket() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "");
    let out = run(Command::new("psql")
        .args(["-X", "-At", "-h", mux.socket_dir().to_str().unwrap(), "-p", &mux.port.to_string()])
        .args(["-U", SCRAM_USER, "-d", "app", "-c", "SELECT 'via unix ' || current_user"])
        .env("PGPASSWORD", SCRAM_PASS));
    assert_eq!(out.trim(), "via unix scram_user");
}
