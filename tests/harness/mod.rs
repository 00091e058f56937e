//! Test harness: throwaway PostgreSQL clusters (initdb + postgres as the `postgres` OS user,
//! unix socket in a temp dir), in-process pgmux instances configured by ini text, and the pgmux
//! binary as its own process (log lines, signals).

pub mod certs;
pub mod cluster;
pub mod netns;
pub mod pgmux;
pub mod process;
pub mod raw;
pub mod tls_client;

pub use certs::Certs;
pub use cluster::Cluster;
pub use netns::Netns;
pub use pgmux::Pgmux;
pub use process::PgmuxProcess;

/// Passwords of the roles every cluster has.
pub const SCRAM_USER: &str = "scram_user";
/// Password of `scram_user` (stored as SCRAM-SHA-256 in PostgreSQL).
pub const SCRAM_PASS: &str = "scram-pass";
/// A role whose password PostgreSQL stores as md5.
pub const MD5_USER: &str = "md5_user";
/// Password of `md5_user`.
pub const MD5_PASS: &str = "md5-pass";

/// A role that logs in to PostgreSQL only with a client certificate.
pub const CERT_USER: &str = "cert_user";

/// SQLSTATE and message of the ErrorResponse behind a tokio-postgres error.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e.as_db_error().unwrap_or_else(|| panic!("expected an ErrorResponse, got {e:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// The rows of a console `SHOW what`, each as column -> text (NULL as "").
pub async fn show_rows(console: &tokio_postgres::Client, what: &str) -> Vec<std::collections::HashMap<String, String>> {
    use tokio_postgres::SimpleQueryMessage;
    let mut cols = Vec::new();
    let mut out = Vec::new();
    for m in console.simple_query(&format!("SHOW {what}")).await.unwrap() {
        match m {
            SimpleQueryMessage::RowDescription(d) => cols = d.iter().map(|c| c.name().to_owned()).collect(),
            SimpleQueryMessage::Row(r) => {
                out.push(cols.iter().enumerate().map(|(i, c)| (c.clone(), r.get(i).unwrap_or("").to_owned())).collect())
            }
            _ => {}
        }
    }
    out
}

/// Waits until `done()` holds, looking every 50 ms for at most `limit`; panics with `what`
/// when it never does.
pub async fn eventually(limit: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the future `done()` makes is true, looking every 50 ms for at most 10 s; panics
/// with `what` when it never is.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// pgbench through the pooler on `port` as scram_user: 8 clients, 100 transactions each, of a
/// script with three statements, in protocol `mode`; every transaction must succeed.
pub fn pgbench_three_statements(port: u16, mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("three.sql");
    std::fs::write(
        &script,
        "\\set a random(1, 1000)\nSELECT :a::int + 1;\nSELECT :a::int * 2, 'two';\nSELECT :a::text || 'three';\n",
    )
    .unwrap();
    let out = run(std::process::Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", SCRAM_USER, "-n", "-M", mode])
        .args(["-c", "8", "-j", "2", "-t", "100", "-f"])
        .arg(&script)
        .arg("app")
        .env("PGPASSWORD", SCRAM_PASS));
    assert!(out.contains("number of transactions actually processed: 800/800"), "{out}");
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
}

/// Runs a command and returns stdout, panicking with its output when it fails.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the shell commands `cleanup` once this test process has exited (a cluster stopped, a
/// network namespace removed), from a detached watchdog: a test that panics or is killed leaves
/// nothing behind.
// The watchdog must outlive this process, so it is deliberately never waited for.
#[allow(clippy::zombie_processes)]
pub fn after_this_process(cleanup: &str) {
    use std::os::unix::process::CommandExt;
    let script = format!("while kill -0 {} 2>/dev/null; do sleep 0.5; done; {cleanup}; true", std::process::id());
    std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn a cleanup watchdog");
}
