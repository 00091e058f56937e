//! Real drivers other than Rust's, through pgmux: psycopg 3 and asyncpg, the Python drivers
//! most PgBouncer users run, each a script in tests/drivers/ that asserts what it reads and
//! exits non-zero otherwise. The interpreter is `PGMUX_TEST_PYTHON`, a virtualenv with both
//! drivers that scripts/test.sh makes (from PyPI); without it these tests say so and pass, so
//! that `cargo test` works on a machine without Python.

use std::path::Path;
use std::process::Command;

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

/// Runs `tests/drivers/<script>` against pgmux (transaction mode, `pool_size` servers) and
/// PostgreSQL straight, on table `table`; returns its output.
fn run_script(script: &str, pool_size: u32, table: &str) -> Option<String> {
    let Some(python) = std::env::var_os("PGMUX_TEST_PYTHON") else {
        eprintln!("PGMUX_TEST_PYTHON is not set (scripts/test.sh sets it): {script} not run");
        return None;
    };
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &format!("default_pool_size = {pool_size}"));
    let mux_dsn = format!("postgresql://{SCRAM_USER}:{SCRAM_PASS}@127.0.0.1:{}/app", mux.port);
    let direct_dsn = format!("postgresql://postgres@/app?host={}&port={}", pg.socket_dir.display(), pg.port);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers").join(script);
    let out = Command::new("timeout")
        .arg("120")
        .arg(python)
        .arg(&path)
        .args([&mux_dsn, &direct_dsn, table])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed ({}):\n{stdout}\n{stderr}", out.status);
    Some(stdout.into_owned())
}

#[test]
fn psycopg_unnamed_statements_run_through_migrations_made_straight_on_postgres() {
    for (pool_size, table) in [(1, "drv_psycopg_1"), (3, "drv_psycopg_3")] {
        if let Some(out) = run_script("psycopg_ddl_behind.py", pool_size, table) {
            assert!(out.contains("ok psycopg: 12 runs across 4 migrations, no error"), "pool {pool_size}: {out}");
        }
    }
}

#[test]
fn asyncpg_reads_every_value_as_its_column_is_typed_now() {
    for (pool_size, table) in [(1, "drv_asyncpg_1"), (3, "drv_asyncpg_3")] {
        if let Some(out) = run_script("asyncpg_types.py", pool_size, table) {
            assert!(out.contains("ok asyncpg: 4 type changes"), "pool {pool_size}: {out}");
        }
    }
}
