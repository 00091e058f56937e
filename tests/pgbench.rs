//! pgbench through pgmux in transaction mode, simple and extended protocol, and with a new
//! connection per transaction (-C). Every transaction must succeed.

use std::process::Command;

use crate::harness::{run, Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

fn pgbench(mux: &Pgmux, args: &[&str]) -> String {
    run(Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &mux.port.to_string(), "-U", SCRAM_USER])
        .args(args)
        .env("PGPASSWORD", SCRAM_PASS))
}

fn processed(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed"))
        .unwrap_or_else(|| panic!("no summary in pgbench output:\n{out}"));
    let nums = line.rsplit(": ").next().unwrap();
    let (done, want) = nums.split_once('/').unwrap();
    (done.trim().parse().unwrap(), want.trim().parse().unwrap())
}

#[test]
fn pgbench_transaction_mode_simple_extended_and_connect() {
    let pg = Cluster::shared();
    pg.psql("postgres", &format!("CREATE DATABASE bench OWNER {SCRAM_USER}"));
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 200");
    pgbench(&mux, &["-i", "-s", "1", "-q", "bench"]);
    for mode in ["simple", "extended"] {
        let out = pgbench(&mux, &["-M", mode, "-c", "16", "-j", "2", "-t", "150", "bench"]);
        assert_eq!(processed(&out), (2400, 2400), "{mode}:\n{out}");
        assert!(out.contains("number of failed transactions: 0 "), "{mode}:\n{out}");
    }
    // The history table of the last run (pgbench truncates it before each run) agrees with what
    // pgbench reported: every transaction really committed through the pooler.
    let history: i64 = pg.psql("bench", "SELECT count(*) FROM pgbench_history").parse().unwrap();
    assert_eq!(history, 2400);
    let out = pgbench(&mux, &["-n", "-S", "-C", "-c", "4", "-j", "2", "-t", "50", "bench"]);
    assert_eq!(processed(&out), (200, 200), "-C:\n{out}");
    let out = pgbench(&mux, &["-n", "-S", "-M", "prepared", "-c", "8", "-j", "2", "-t", "200", "bench"]);
    assert_eq!(processed(&out), (1600, 1600), "-M prepared:\n{out}");
    assert!(out.contains("number of failed transactions: 0 "), "-M prepared:\n{out}");
}
