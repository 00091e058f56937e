//! A throwaway PostgreSQL cluster per test binary (shared) or per test (own, for restarts).
//! initdb and postgres refuse root, so they run as the `postgres` OS user in a directory that
//! user owns. A watchdog process stops the cluster and removes its files when the test process
//! exits, however it exits.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{run, CERT_USER, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Its directory (data/, socket, logs).
    pub dir: PathBuf,
    /// The unix socket directory (= dir).
    pub socket_dir: PathBuf,
    /// Port (the socket is `.s.PGSQL.<port>`; TCP is on 127.0.0.1 too).
    pub port: u16,
    /// The TCP address it listens on: 127.0.0.1, or its namespace's address.
    pub host: String,
    /// The network namespace it runs in (`ip netns` name), if any.
    netns: Option<String>,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin.\n\
             Install them: apt-get install postgresql postgresql-contrib (scripts/test.sh does this)"
        )
    })
}

fn postgres_ids() -> (u32, u32) {
    let u = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("the `postgres` OS user must exist (it comes with the postgresql package)");
    (u.uid.as_raw(), u.gid.as_raw())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    /// The cluster shared by all tests of this binary.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(Cluster::start)
    }

    /// A fresh cluster of the caller's own.
    pub fn start() -> Cluster {
        Self::start_on(None)
    }

    /// A fresh cluster inside network namespace `ns`, listening on its address over TCP (and on
    /// its unix socket, which the host reaches: sockets in the file system cross namespaces).
    pub fn start_in(ns: &super::Netns) -> Cluster {
        Self::start_on(Some(ns))
    }

    fn start_on(ns: Option<&super::Netns>) -> Cluster {
        let bin = pg_bin();
        let (uid, gid) = postgres_ids();
        let base = std::env::temp_dir().join(format!("pgmux-it-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new().prefix("pg").tempdir_in(&base).unwrap().keep();
        nix::unistd::chown(&base, Some(uid.into()), Some(gid.into())).unwrap();
        nix::unistd::chown(&dir, Some(uid.into()), Some(gid.into())).unwrap();
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let data = dir.join("data");
        run(Command::new(bin.join("initdb"))
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .uid(uid)
            .gid(gid));
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\n\
             local replication postgres trust\n\
             local all md5_user,aq_md5 md5\n\
             local all all scram-sha-256\n\
             host all postgres 127.0.0.1/32 trust\n\
             host replication postgres 127.0.0.1/32 trust\n\
             hostssl all cert_user 127.0.0.1/32 cert\n\
             host all all 127.0.0.1/32 scram-sha-256\n\
             host all all 10.0.0.0/8 scram-sha-256\n",
        )
        .unwrap();
        // TLS with the test CA: server certificate, and client certificates checked against it.
        let certs = super::Certs::shared();
        for f in ["server.crt", "server.key", "ca.crt"] {
            let to = data.join(f);
            std::fs::copy(certs.dir.join(f), &to).unwrap();
            nix::unistd::chown(&to, Some(uid.into()), Some(gid.into())).unwrap();
        }
        let port = free_port();
        let (host, netns) = match ns {
            Some(ns) => (ns.addr.clone(), Some(ns.name.clone())),
            None => ("127.0.0.1".to_owned(), None),
        };
        let c = Cluster { socket_dir: dir.clone(), dir, port, host, netns, bin };
        c.pg_ctl(&["start", "-w", "-l", c.dir.join("postgres.log").to_str().unwrap()]);
        spawn_watchdog(&c);
        c.psql("postgres", &format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {SCRAM_USER} LOGIN SUPERUSER PASSWORD '{SCRAM_PASS}'"));
        c.psql(
            "postgres",
            &format!("SET password_encryption = 'md5'; CREATE ROLE {MD5_USER} LOGIN SUPERUSER PASSWORD '{MD5_PASS}'"),
        );
        c.psql("postgres", &format!("CREATE DATABASE app OWNER {SCRAM_USER}"));
        c.psql("postgres", &format!("CREATE ROLE {CERT_USER} LOGIN"));
        c
    }

    fn pg_ctl(&self, args: &[&str]) {
        let (uid, gid) = postgres_ids();
        let opts = format!(
            "-k {} -p {} -c listen_addresses={} -c max_connections=200 -c fsync=off -c synchronous_commit=off \
             -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_ca_file=ca.crt",
            self.socket_dir.display(),
            self.port,
            self.host
        );
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = match &self.netns {
            // `ip netns exec` needs root; the server then drops to the postgres user.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "setpriv", &format!("--reuid={uid}"), &format!("--regid={gid}")]);
                c.args(["--clear-groups", "--"]).arg(&pg_ctl);
                c
            }
            None => {
                let mut c = Command::new(&pg_ctl);
                c.uid(uid).gid(gid);
                c
            }
        };
        cmd.args(["-D", self.dir.join("data").to_str().unwrap(), "-o", &opts]).args(args);
        cmd.stdout(Stdio::null());
        run(&mut cmd);
    }

    /// Restarts PostgreSQL (fast mode: sessions are terminated).
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-w", "-m", "fast", "-l", self.dir.join("postgres.log").to_str().unwrap()]);
    }

    /// Stops PostgreSQL (fast mode).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-w", "-m", "fast"]);
    }

    /// Starts PostgreSQL again after [`Cluster::stop`].
    pub fn start_again(&self) {
        self.pg_ctl(&["start", "-w", "-l", self.dir.join("postgres.log").to_str().unwrap()]);
    }

    /// Runs SQL as the superuser over the unix socket and returns unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        run(Command::new("psql")
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.socket_dir.to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-c", sql]))
        .trim()
        .to_owned()
    }

    /// A tokio-postgres session straight to PostgreSQL (not through pgmux) as the SCRAM test
    /// user, over the unix socket: quick enough to act inside a test's timing windows, as
    /// `psql` is not. Its connection task runs on the caller's runtime.
    pub async fn connect_direct(&self) -> tokio_postgres::Client {
        let url = format!(
            "host={} port={} user={} password={} dbname=app",
            self.socket_dir.display(),
            self.port,
            super::SCRAM_USER,
            super::SCRAM_PASS
        );
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// Waits (up to 10 s) until PostgreSQL is running `query` for some session: a cancel sent
    /// earlier could find nothing to cancel, or a server killed earlier be one the query never
    /// reached.
    pub async fn wait_until_running(&self, query: &str) {
        let direct = self.connect_direct().await;
        super::eventually_async(&format!("PostgreSQL to run {query:?}"), || async {
            let sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = $1";
            direct.query_one(sql, &[&query]).await.unwrap().get::<_, i64>(0) > 0
        })
        .await;
    }

    /// The stored secret (md5 or SCRAM) of a role, for userlist.txt.
    pub fn secret_of(&self, role: &str) -> String {
        self.psql("postgres", &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"))
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// Stops the cluster and removes its directory once this test process has exited.
fn spawn_watchdog(c: &Cluster) {
    super::after_this_process(&format!(
        "runuser -u postgres -- {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}; \
         rmdir {base} 2>/dev/null",
        pg_ctl = c.bin.join("pg_ctl").display(),
        data = c.data().display(),
        dir = c.dir.display(),
        base = c.dir.parent().unwrap_or(Path::new("/nonexistent")).display(),
    ));
}
