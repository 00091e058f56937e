//! An in-process pgmux on 127.0.0.1 (random port) and a unix socket in a temp dir, configured
//! by ini text, running on its own runtime thread so that blocking clients (psql, pgbench) can
//! be used from tests. Dropping it shuts it down.

use std::sync::Arc;
use std::thread::JoinHandle;

use pgmux::app::Pooler;
use pgmux::shared::{RunState, Shared};
use tokio_postgres::{Client, NoTls};

use super::{Cluster, MD5_USER, SCRAM_USER};

/// A running pgmux.
pub struct Pgmux {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory with the ini, userlist and unix socket.
    pub dir: tempfile::TempDir,
    /// Its shared state.
    pub shared: Arc<Shared>,
    /// The metrics endpoint's port, when `exporter_port` is set.
    pub exporter_port: Option<u16>,
    thread: Option<JoinHandle<()>>,
}

/// What to write into the ini.
#[derive(Default)]
pub struct Setup<'a> {
    /// Lines for `[pgbouncer]` (after the harness defaults, so they win).
    pub pgbouncer: &'a str,
    /// Lines for `[databases]`; empty means `* = host=<cluster socket> port=<port>`.
    pub databases: &'a str,
    /// Lines for userlist.txt; None means both test roles with their PostgreSQL secrets.
    pub userlist: Option<&'a str>,
}

impl Pgmux {
    /// Starts pgmux in front of `cluster` in transaction mode with `extra` settings.
    pub fn start(cluster: &Cluster, extra: &str) -> Pgmux {
        Self::start_with(cluster, Setup { pgbouncer: extra, ..Setup::default() })
    }

    /// Starts pgmux with full control of the ini.
    pub fn start_with(cluster: &Cluster, setup: Setup<'_>) -> Pgmux {
        let dir = tempfile::Builder::new().prefix("pgmux").tempdir().unwrap();
        let userlist = match setup.userlist {
            Some(u) => u.to_owned(),
            None => format!(
                "\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n",
                cluster.secret_of(SCRAM_USER),
                cluster.secret_of(MD5_USER)
            ),
        };
        std::fs::write(dir.path().join("userlist.txt"), userlist).unwrap();
        let databases = if setup.databases.is_empty() {
            format!("* = host={} port={}", cluster.socket_dir.display(), cluster.port)
        } else {
            setup
                .databases
                .replace("$SOCKET", cluster.socket_dir.to_str().unwrap())
                .replace("$PORT", &cluster.port.to_string())
        };
        let ini = format!(
            "[databases]\n{databases}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 0\nunix_socket_dir = {dir}\n\
             auth_type = scram-sha-256\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
             log_connections = 0\nlog_disconnections = 0\nserver_login_retry = 1\n{extra}\n",
            dir = dir.path().display(),
            extra = setup.pgbouncer,
        );
        let path = dir.path().join("pgmux.ini");
        std::fs::write(&path, ini).unwrap();
        let config = pgmux::config::load(&path).unwrap_or_else(|e| panic!("test config does not load: {e}"));
        let _ = pgmux::logging::init(&config.general, 0, std::env::var_os("PGMUX_TEST_LOG").is_none());
        let pooler = Pooler::bind(config).expect("bind pgmux");
        let port = pooler.port();
        let exporter_port = pooler.exporter_port();
        let shared = pooler.shared();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                pooler.run().await.unwrap();
            });
        });
        Pgmux { port, dir, shared, exporter_port, thread: Some(thread) }
    }

    /// A libpq connection string for TCP.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        let password = if password.is_empty() { String::new() } else { format!("password={password} ") };
        format!("host=127.0.0.1 port={} user={user} {password}dbname={db}", self.port)
    }

    /// The unix socket directory.
    pub fn socket_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Connects with tokio-postgres over TCP; the connection task runs on the caller's runtime.
    pub async fn connect(&self, user: &str, password: &str, db: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.url(user, password, db), NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

impl Pgmux {
    /// True once pgmux has exited (after SHUTDOWN).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Pgmux {
    fn drop(&mut self) {
        self.shared.set_state(RunState::Immediate);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
