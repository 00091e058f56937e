//! Drop-in behaviour of the pgmux process against PgBouncer 1.25's, where it shows only in a
//! running process: HBA and auth_file problems logged while pgmux starts and reloads, restart-only
//! settings kept at RELOAD, and the exit status and messages of start-ups that fail.

use std::process::{Command, Stdio};

use crate::harness::process::binary;
use crate::harness::{db_error, Cluster, PgmuxProcess, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

/// The log line containing `needle`, checked to be at `level`.
fn logged(mux: &PgmuxProcess, level: &str, needle: &str) -> String {
    let line = mux.wait_for_log(needle);
    assert!(line.contains(&format!(" {level} ")), "{line}");
    line
}

/// As PgBouncer: an HBA line it cannot parse is skipped with a WARNING naming file and line, and
/// the rest loads, at start-up and at RELOAD; an HBA file that cannot be read leaves no rules,
/// so every login is refused, and RELOAD still answers success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_lines_pgbouncer_skips_are_skipped_and_a_missing_file_refuses_all() {
    let pg = Cluster::shared();
    let files = tempfile::tempdir().unwrap();
    let hba = files.path().join("hba.conf");
    std::fs::write(&hba, "host all all samenet reject\nhost all all 127.0.0.1/32 scram-sha-256 clientcert=1\nhost all all 127.0.0.1/32 scram-sha-256\n").unwrap();
    let ini = format!("auth_type = hba\nauth_hba_file = {}", hba.display());
    let mux = PgmuxProcess::start(pg, "app = host=$SOCKET port=$PORT", &ini, &userlist(pg));
    let at = format!("{}:1: could not parse hba config line 1", hba.display());
    logged(&mux, "WARNING", &at);
    logged(&mux, "WARNING", &format!("{}:2: could not parse hba config line 2", hba.display()));
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.expect("line 3 applies");
    app.simple_query("SELECT 1").await.unwrap();

    let console = mux.console().await;
    std::fs::write(&hba, "hostgssenc all all all trust\nhost all +admins all trust\nhost all all all md5\n").unwrap();
    console.simple_query("RELOAD").await.expect("skipped lines do not fail RELOAD");
    logged(&mux, "WARNING", &format!("{}:2: could not parse hba config line 2", hba.display()));
    assert!(mux.connect(MD5_USER, MD5_PASS, "app").await.is_ok(), "line 3 applies after RELOAD");

    std::fs::remove_file(&hba).unwrap();
    console.simple_query("RELOAD").await.expect("a missing HBA file does not fail RELOAD");
    logged(&mux, "ERROR", &format!("could not open hba config file {}", hba.display()));
    let e = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.expect_err("no rules: refused");
    assert_eq!(db_error(&e), ("08P01".into(), "no authentication method is found".into()));
}

/// As PgBouncer: a missing HBA file at start-up is an ERROR, pgmux starts, and no login passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_hba_file_at_start_up_refuses_every_login() {
    let pg = Cluster::shared();
    let files = tempfile::tempdir().unwrap();
    let hba = files.path().join("missing.conf");
    let ini = format!("auth_type = hba\nauth_hba_file = {}", hba.display());
    let mux = PgmuxProcess::start(pg, "app = host=$SOCKET port=$PORT", &ini, &userlist(pg));
    logged(&mux, "ERROR", &format!("could not open hba config file {}", hba.display()));
    let e = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.expect_err("no rules: refused");
    assert_eq!(db_error(&e), ("08P01".into(), "no authentication method is found".into()));
}

/// As PgBouncer: a broken auth_file line is an ERROR and the users above it stay; an auth_file
/// gone at RELOAD is an ERROR, RELOAD answers success and the users in force stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_file_problems_are_errors_pgmux_starts_and_reloads_through() {
    let pg = Cluster::shared();
    let list = format!(
        "\"{SCRAM_USER}\" \"{}\"\nbroken line\n\"{MD5_USER}\" \"{}\"\n",
        pg.secret_of(SCRAM_USER),
        pg.secret_of(MD5_USER)
    );
    let mux = PgmuxProcess::start(pg, "app = host=$SOCKET port=$PORT", "auth_type = md5", &list);
    logged(&mux, "ERROR", "broken auth file");
    assert!(mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.is_ok(), "the user above the bad line stays");
    let e = mux.connect(MD5_USER, MD5_PASS, "app").await.expect_err("the user below is not loaded");
    assert_eq!(db_error(&e).0, "08P01");

    std::fs::remove_file(mux.dir.path().join("userlist.txt")).unwrap();
    let console = mux.console().await;
    console.simple_query("RELOAD").await.expect("a missing auth_file does not fail RELOAD");
    logged(&mux, "ERROR", "could not open auth_file");
    assert!(mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.is_ok(), "the users in force stay");
}

/// As PgBouncer: RELOAD leaves restart-only settings (CF_NO_RELOAD) as they are in force, even
/// with a bad value in the file; pgmux says at LOG level that they need a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_restart_only_settings_in_force() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(pg, "app = host=$SOCKET port=$PORT", "auth_type = scram-sha-256", &userlist(pg));
    // The harness runs as root without -u: pgmux warns where PgBouncer refuses.
    logged(&mux, "WARNING", "running as root");
    let ini = mux.dir.path().join("pgmux.ini");
    let text = std::fs::read_to_string(&ini).unwrap();
    std::fs::write(&ini, format!("{text}listen_port = abc\ndisable_pqexec = 1\ndefault_pool_size = 7\n")).unwrap();
    let console = mux.console().await;
    console.simple_query("RELOAD").await.expect("restart-only values do not fail RELOAD");
    logged(&mux, "LOG", "listen_port = \"abc\" in the config needs a restart");
    logged(&mux, "LOG", "disable_pqexec = \"1\" in the config needs a restart");
    let rows = console.simple_query("SHOW CONFIG").await.unwrap();
    let value = |key: &str| {
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get("key") == Some(key) => {
                    r.get("value").map(str::to_owned)
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(value("listen_port"), mux.port.to_string());
    assert_eq!(value("disable_pqexec"), "0");
    assert_eq!(value("default_pool_size"), "7");
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    app.simple_query("SELECT 1").await.expect("disable_pqexec is not in force");
}

/// Runs the pgmux binary in `dir` with `args`: exit code, stderr.
fn run(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(binary()).args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run pgmux");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Start-ups that fail exit 1 as PgBouncer's do: usage errors, nothing to listen on, a bad
/// config (its error in the logfile the ini names, nothing on stderr with -q), and a `-u` user
/// that does not exist (before any listener is bound).
#[test]
fn failed_start_ups_exit_1_like_pgbouncer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, err) = run(d, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no configuration file specified"), "{err}");
    let (code, err) = run(d, &["-x", "a.ini"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("'-x'"), "{err}");
    assert_eq!(run(d, &["a.ini", "b.ini"]).0, Some(1));

    std::fs::write(d.join("nowhere.ini"), "[pgbouncer]\nlisten_addr =\nunix_socket_dir =\n").unwrap();
    let (code, err) = run(d, &["nowhere.ini"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nowhere to listen on"), "{err}");

    let log = d.join("bad.log");
    std::fs::write(
        d.join("bad.ini"),
        format!("[pgbouncer] ; comment\nlogfile = {}\npool_mode = bogus\n", log.display()),
    )
    .unwrap();
    let (code, err) = run(d, &["-q", "bad.ini"]);
    assert_eq!((code, err.as_str()), (Some(1), ""));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" ERROR bad.ini:3: invalid pool_mode: \"bogus\""), "{text}");
    assert!(text.contains(" FATAL cannot load config file"), "{text}");
    let (code, err) = run(d, &["bad.ini"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad.ini:3: invalid pool_mode"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ini = format!(
        "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nlogfile = {}\n",
        d.join("u.log").display()
    );
    std::fs::write(d.join("u.ini"), ini).unwrap();
    let (code, err) = run(d, &["-u", "nosuchuser", "u.ini"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("could not find user 'nosuchuser' to switch to"), "{err}");
    let text = std::fs::read_to_string(d.join("u.log")).unwrap_or_default();
    assert!(!text.contains("listening on"), "failed before binding: {text}");
    assert!(text.contains(" FATAL could not find user 'nosuchuser' to switch to"), "in the log too: {text}");

    // A port taken: the reason in the logfile as PgBouncer's FATAL, nothing on stderr with -q.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ini = format!(
        "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {}\nunix_socket_dir =\nlogfile = {}\n",
        taken.local_addr().unwrap().port(),
        d.join("taken.log").display()
    );
    std::fs::write(d.join("taken.ini"), ini).unwrap();
    let (code, err) = run(d, &["-q", "taken.ini"]);
    assert_eq!((code, err.as_str()), (Some(1), ""));
    let text = std::fs::read_to_string(d.join("taken.log")).unwrap();
    assert!(text.contains(" FATAL ") && text.contains("Address already in use"), "{text}");
}

/// As PgBouncer's kill_database: a database gone from [databases] at RELOAD is dropped, its
/// clients closed with `database removed`, new logins refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_removed_at_reload_is_dropped_with_its_clients() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "app = host=$SOCKET port=$PORT\ngone = host=$SOCKET port=$PORT dbname=app",
        "auth_type = scram-sha-256",
        &userlist(pg),
    );
    let stays = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let goes = mux.connect(SCRAM_USER, SCRAM_PASS, "gone").await.unwrap();
    goes.simple_query("SELECT 1").await.unwrap();
    let ini = mux.dir.path().join("pgmux.ini");
    let text = std::fs::read_to_string(&ini).unwrap();
    let without: String = text.lines().filter(|l| !l.starts_with("gone =")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&ini, without).unwrap();
    mux.console().await.simple_query("RELOAD").await.unwrap();
    logged(&mux, "WARNING", "dropping database 'gone' as it does not exist anymore");
    let e = goes.simple_query("SELECT 2").await.expect_err("its client is closed");
    assert!(e.is_closed() || db_error(&e).1 == "database removed", "{e}");
    let e = mux.connect(SCRAM_USER, SCRAM_PASS, "gone").await.expect_err("no such database now");
    assert_eq!(db_error(&e), ("08P01".into(), "no such database: gone".into()));
    logged(&mux, "LOG", &format!("login failed: db=gone user={SCRAM_USER}"));
    stays.simple_query("SELECT 3").await.expect("the other database's client stays");
}

/// PgBouncer's start-up line on open files, which monitoring scrapes from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_logs_the_open_files_limit_and_the_most_pgmux_could_use() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "app = host=$SOCKET port=$PORT pool_size=7\nforced = host=$SOCKET port=$PORT user=md5_user pool_size=3",
        "max_client_conn = 50",
        &userlist(pg),
    );
    // 50 clients + 10, 7 servers for each of the auth_file's 2 users, 3 for the forced user.
    let line = logged(&mux, "LOG", "kernel file descriptor limit: ");
    assert!(line.ends_with("; max_client_conn: 50, max expected fd use: 77"), "{line}");
}
