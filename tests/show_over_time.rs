//! Values in SHOW POOLS, SERVERS and STATS that follow PgBouncer's rules over time: servers
//! idle past server_check_delay turning `used`, a server's last use and settings, and averages
//! over the stats period so far.

use std::time::Duration;

use crate::admin::{col, console, query, CONSOLE};
use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

/// As PgBouncer's janitor: an idle server past server_check_delay is `used` (it gets the check
/// query before its next client) in SHOW POOLS and SHOW SERVERS; SHOW SERVERS gives a server's
/// last use as `request_time` and the application_name it was set to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_past_the_check_delay_are_used_and_show_their_last_use() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &format!("{CONSOLE}\npool_mode = transaction\nserver_check_delay = 2"));
    let c = console(&mux).await;
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    app.simple_query("SET application_name = 'idle_probe'").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The server was last used a second after its login: request_time moves with its use.
    app.simple_query("SELECT 1").await.unwrap();
    let pool_row = |rows: &[Vec<Option<String>>], cols: &[String]| {
        let r = rows.iter().find(|r| col(cols, r, "database") == "app" && col(cols, r, "user") == SCRAM_USER).unwrap();
        (col(cols, r, "sv_idle").to_owned(), col(cols, r, "sv_used").to_owned())
    };
    let (cols, rows) = query(&c, "SHOW POOLS").await.unwrap();
    assert_eq!(pool_row(&rows, &cols), ("1".into(), "0".into()), "just used: idle");
    let (cols, rows) = query(&c, "SHOW SERVERS").await.unwrap();
    let server = rows.iter().find(|r| col(&cols, r, "database") == "app").unwrap();
    assert_eq!(col(&cols, server, "state"), "idle");
    assert_eq!(col(&cols, server, "application_name"), "idle_probe");
    assert_eq!(col(&cols, server, "tls"), "");
    assert!(
        col(&cols, server, "request_time") > col(&cols, server, "connect_time"),
        "request_time is its last use, a second after its login: {server:?}"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (cols, rows) = query(&c, "SHOW POOLS").await.unwrap();
    assert_eq!(pool_row(&rows, &cols), ("0".into(), "1".into()), "past server_check_delay: used");
    let (cols, rows) = query(&c, "SHOW SERVERS").await.unwrap();
    let server = rows.iter().find(|r| col(&cols, r, "database") == "app").unwrap();
    assert_eq!(col(&cols, server, "state"), "used");
    // The next client gets it after the check, and it is idle again.
    app.simple_query("SELECT 1").await.unwrap();
    let (cols, rows) = query(&c, "SHOW POOLS").await.unwrap();
    assert_eq!(pool_row(&rows, &cols), ("1".into(), "0".into()));
}

/// As PgBouncer's, SHOW STATS' averages run from the start of the current stats_period to the
/// moment of the SHOW: work done moments ago shows at once, not a period later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn averages_include_the_work_of_the_period_so_far() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &format!("{CONSOLE}\nstats_period = 60"));
    let c = console(&mux).await;
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    for _ in 0..20 {
        app.simple_query("SELECT pg_sleep(0.01)").await.unwrap();
    }
    let (cols, rows) = query(&c, "SHOW STATS").await.unwrap();
    let row = rows.iter().find(|r| col(&cols, r, "database") == "app").unwrap();
    let rate: u64 = col(&cols, row, "avg_query_count").parse().unwrap();
    let time: u64 = col(&cols, row, "avg_query_time").parse().unwrap();
    assert!(rate > 0, "queries of the period so far: {row:?}");
    assert!(time >= 10_000, "each slept 10 ms: {row:?}");
}
