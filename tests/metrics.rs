//! The :9631-style metrics endpoint: names, labels and values against the admin console's SHOW
//! output during a workload, /health following PAUSE and RESUME, and bad HTTP requests.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

pub(crate) async fn scrape(port: u16) -> HashMap<String, f64> {
    let (status, body) = http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_show_output_during_a_workload() {
    let pg = Cluster::shared();
    pg.psql("postgres", &format!("CREATE DATABASE met_db OWNER {SCRAM_USER}"));
    let mux = Pgmux::start(
        pg,
        &format!(
            "admin_users = {SCRAM_USER}\nauth_type = md5\nexporter_port = {}\nexporter_listen_addr = 127.0.0.1",
            free_port()
        ),
    );
    let port = mux.exporter_port.expect("exporter is on");
    let admin = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "met_db").await.unwrap();
    // A workload running while we scrape.
    let worker = {
        let url = mux.url(SCRAM_USER, SCRAM_PASS, "met_db");
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            for _ in 0..300 {
                c.simple_query("SELECT 1").await.unwrap();
            }
        })
    };
    for _ in 0..5 {
        scrape(port).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.await.unwrap();
    // The worker's client is dropped with its task: pgmux has seen it go before the quiet
    // scrape, or the scrape and SHOW POOLS could count it differently.
    crate::harness::eventually(Duration::from_secs(10), "the worker's client gone", || {
        mux.shared.client_registry.all().iter().filter(|c| c.db() == "met_db").count() == 1
    })
    .await;
    for _ in 0..100 {
        app.simple_query("SELECT 2").await.unwrap();
    }
    // Quiet now: the scrape and SHOW must agree exactly.
    let m = scrape(port).await;
    assert_eq!(m["pgbouncer_up"], 1.0);
    assert_eq!(m["pgbouncer_version"], 12502.0);
    // The exporter's own families, which Pigsty's dashboards chart: each scrape counted once.
    assert_eq!(m["pgbouncer_exporter_up"], 1.0);
    let next = scrape(port).await;
    let count = "pgbouncer_exporter_scrape_total_count";
    assert_eq!(next[count], m[count] + 1.0);
    assert_eq!(next["pgbouncer_exporter_server_scrape_total_count{datname=\"pgbouncer\"}"], next[count]);
    assert!(next["pgbouncer_exporter_scrape_duration"] > 0.0 && next["pgbouncer_exporter_uptime"] > 0.0);
    let pool_samples = "pgbouncer_exporter_query_scrape_metric_count{datname=\"pgbouncer\",query=\"pgbouncer_pool\"}";
    assert!(next[pool_samples] >= 13.0, "one pool at least, 13 pool metrics: {}", next[pool_samples]);
    let stats = crate::harness::show_rows(&admin, "STATS").await;
    let s = stats.iter().find(|r| r["database"] == "met_db").unwrap();
    let key = "{datname=\"met_db\"}";
    assert_eq!(m[&format!("pgbouncer_stat_total_xact_count{key}")], s["total_xact_count"].parse::<f64>().unwrap());
    assert_eq!(m[&format!("pgbouncer_stat_total_query_count{key}")], 400.0);
    assert_eq!(m[&format!("pgbouncer_stat_total_received{key}")], s["total_received"].parse::<f64>().unwrap());
    let t = s["total_query_time"].parse::<f64>().unwrap() * 1e-6;
    assert!((m[&format!("pgbouncer_stat_total_query_time{key}")] - t).abs() < 1e-9, "query time in seconds");
    let pools = crate::harness::show_rows(&admin, "POOLS").await;
    let p = pools.iter().find(|r| r["database"] == "met_db").unwrap();
    let pool_key = format!(
        "{{datname=\"met_db\",user=\"{SCRAM_USER}\",pool_mode=\"{}\",load_balance_hosts=\"{}\"}}",
        p["pool_mode"], p["load_balance_hosts"]
    );
    assert_eq!(m[&format!("pgbouncer_pool_active_clients{pool_key}")], p["cl_active"].parse::<f64>().unwrap());
    assert_eq!(m[&format!("pgbouncer_pool_idle_servers{pool_key}")], p["sv_idle"].parse::<f64>().unwrap());
    let lists = crate::harness::show_rows(&admin, "LISTS").await;
    let pools_items = lists.iter().find(|r| r["list"] == "pools").unwrap()["items"].parse::<f64>().unwrap();
    assert_eq!(m["pgbouncer_list_items{list=\"pools\"}"], pools_items);
    let db_key =
        m.keys().find(|k| k.starts_with("pgbouncer_database_pool_size{datname=\"met_db\"")).expect("database metric");
    assert!(db_key.contains("real_datname=\"met_db\""), "{db_key}");
    assert!(m["process_resident_memory_bytes"] > 0.0);
    // pgmux's own latency histograms count every query SHOW STATS counted.
    let hist_count = m[&format!("pgmux_pool_query_duration_seconds_count{{datname=\"met_db\",user=\"{SCRAM_USER}\"}}")];
    assert_eq!(hist_count, 400.0);
    let inf =
        m[&format!("pgmux_pool_query_duration_seconds_bucket{{datname=\"met_db\",user=\"{SCRAM_USER}\",le=\"+Inf\"}}")];
    assert_eq!(inf, 400.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn community_names_on_request() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(
        pg,
        &format!("exporter_port = {}\nexporter_metrics = community\nmax_client_conn = 77", free_port()),
    );
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    for _ in 0..10 {
        app.simple_query("SELECT 1").await.unwrap();
    }
    let m = scrape(mux.exporter_port.unwrap()).await;
    assert_eq!(m["pgbouncer_config_max_client_connections"], 77.0);
    assert!(m.keys().any(|k| k.starts_with("pgbouncer_version_info{")));
    assert!(m["pgbouncer_stats_totals_queries_pooled_total{database=\"app\"}"] >= 10.0);
    assert_eq!(m[&format!("pgbouncer_pools_client_active_connections{{database=\"app\",user=\"{SCRAM_USER}\"}}")], 1.0);
    assert!(m.contains_key("pgbouncer_pools"));
    assert!(!m.keys().any(|k| k.starts_with("pgbouncer_pool_")), "pigsty names are off in this set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_pause_and_bad_requests_are_refused() {
    let pg = Cluster::shared();
    let mux =
        Pgmux::start(pg, &format!("admin_users = {SCRAM_USER}\nauth_type = md5\nexporter_port = {}", free_port()));
    let port = mux.exporter_port.unwrap();
    let admin = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    assert_eq!(http(port, "GET /health HTTP/1.1\r\n\r\n").await.0, 200);
    admin.simple_query("PAUSE").await.unwrap();
    assert_eq!(http(port, "GET /health HTTP/1.1\r\n\r\n").await.0, 503);
    admin.simple_query("RESUME").await.unwrap();
    assert_eq!(http(port, "GET /health HTTP/1.1\r\n\r\n").await.0, 200);
    assert_eq!(http(port, "GET /nope HTTP/1.1\r\n\r\n").await.0, 404);
    assert_eq!(http(port, "POST /metrics HTTP/1.1\r\n\r\n").await.0, 405);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http(port, &huge).await.0, 431);
    // The pooler keeps serving.
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    app.simple_query("SELECT 1").await.unwrap();
}
