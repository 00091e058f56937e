//! Parameter tracking: each client keeps its own TimeZone, DateStyle, application_name ...
//! whichever server it is given, as PgBouncer's varcache does.

use tokio_postgres::NoTls;

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

async fn show(c: &tokio_postgres::Client, what: &str) -> String {
    c.query_one(&format!("SHOW {what}"), &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_keeps_its_own_parameters_on_a_shared_server() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let url_b =
        format!("{} application_name=bee options='-c DateStyle=SQL,DMY'", mux.url(SCRAM_USER, SCRAM_PASS, "app"));
    let (b, conn) = tokio_postgres::connect(&url_b, NoTls).await.unwrap();
    tokio::spawn(conn);
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'; SET application_name = 'ay'").await.unwrap();
    for _ in 0..3 {
        assert_eq!(show(&a, "TimeZone").await, "Asia/Tokyo");
        assert_eq!(show(&a, "application_name").await, "ay");
        assert_ne!(show(&b, "TimeZone").await, "Asia/Tokyo");
        assert_eq!(show(&b, "application_name").await, "bee");
        assert_eq!(show(&b, "DateStyle").await, "SQL, DMY");
        assert_eq!(show(&a, "DateStyle").await, "ISO, MDY");
    }
    let pids: Vec<i32> = futures_util::future::join_all(
        [&a, &b].map(|c| async move { c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get::<_, i32>(0) }),
    )
    .await;
    assert_eq!(pids[0], pids[1], "both clients share the single server");
}

/// application_name_add_host (Pigsty's pooler template sets it): the client's application and
/// its address; a client that names none is `app`, as PgBouncer names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_add_host_names_the_client_and_its_address() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "application_name_add_host = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let url_b = format!("{} application_name=bee", mux.url(SCRAM_USER, SCRAM_PASS, "app"));
    let (b, conn) = tokio_postgres::connect(&url_b, NoTls).await.unwrap();
    tokio::spawn(conn);
    let (named, unnamed) = (show(&b, "application_name").await, show(&a, "application_name").await);
    assert!(named.starts_with("bee - 127.0.0.1:"), "{named}");
    assert!(unnamed.starts_with("app - 127.0.0.1:"), "{unnamed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_startup_parameters_drops_listed_ones() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "ignore_startup_parameters = extra_float_digits, options");
    // psql-style options that are not tracked are ignored when `options` is listed.
    let url = format!("{} options='-c work_mem=64kB'", mux.url(SCRAM_USER, SCRAM_PASS, "app"));
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    assert_ne!(show(&c, "work_mem").await, "64kB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_value_the_server_refuses_ends_the_client_in_pgbouncers_words() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 1");
    let url = format!("{} options='-c TimeZone=Nowhere/Bogus'", mux.url(SCRAM_USER, SCRAM_PASS, "app"));
    // Twice: the second client wants the same values, on the same server, which must not count
    // as set to them because the first client's SET was tried there.
    for _ in 0..2 {
        // Accepted at login, as PgBouncer accepts it; refused by the server at the first query.
        let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        let e = c.simple_query("SELECT 1").await.unwrap_err();
        let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
        assert_eq!((db.code().code(), db.message()), ("08P01", "invalid server parameter"));
    }
}
