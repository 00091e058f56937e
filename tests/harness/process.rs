//! The pgmux binary as an operator runs it: its own process, a pgbouncer.ini and userlist.txt
//! in a temp dir, a logfile. For what only the process shows: log lines, signals, start-up and
//! reload errors. Dropping it sends SIGQUIT (PgBouncer's fast exit) and reaps the process.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::Cluster;

/// A running pgmux process.
pub struct PgmuxProcess {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory with the ini, userlist, logfile and unix socket.
    pub dir: tempfile::TempDir,
    child: Child,
}

/// The pgmux binary cargo built beside this test binary (`cargo test --workspace` builds it).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps").join("pgmux");
    assert!(bin.exists(), "{} is missing: run `cargo build -p pgmux` (cargo test --workspace does)", bin.display());
    bin
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    err
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgmuxProcess {
    /// Starts pgmux with `databases` (`$SOCKET`/`$PORT` name the cluster) and `pgbouncer` lines
    /// after the defaults; waits until it accepts connections.
    pub fn start(cluster: &Cluster, databases: &str, pgbouncer: &str, userlist: &str) -> PgmuxProcess {
        let dir = tempfile::Builder::new().prefix("pgmux-proc").tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("userlist.txt"), userlist).unwrap();
        let databases = databases
            .replace("$SOCKET", cluster.socket_dir.to_str().unwrap())
            .replace("$PORT", &cluster.port.to_string());
        let ini = format!(
            "[databases]\n{databases}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir = {d}\nauth_file = {d}/userlist.txt\nlogfile = {d}/pgmux.log\nadmin_users = pgbouncer\n\
             {pgbouncer}\n",
            d = dir.path().display(),
        );
        std::fs::write(dir.path().join("pgmux.ini"), ini).unwrap();
        let child = Command::new(binary())
            .arg("--quiet")
            .arg(dir.path().join("pgmux.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgmux");
        let mut p = PgmuxProcess { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        // `process up` is logged once the signal handlers are in place.
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !p.log().contains("process up") {
            if let Some(status) = p.child.try_wait().unwrap() {
                let err = stderr_of(&mut p.child);
                panic!("pgmux exited with {status}: {err}\nlog:\n{}", p.log());
            }
            assert!(Instant::now() < deadline, "pgmux did not start:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// Online restart: starts a new pgmux with `-R` on the same ini, waits until the old process
    /// has handed everything over and exited, and goes on with the new one.
    pub fn reboot(&mut self) {
        let mut old = self.start_reboot();
        let deadline = Instant::now() + Duration::from_secs(20);
        while old.try_wait().unwrap().is_none() {
            if let Some(status) = self.child.try_wait().unwrap() {
                let err = stderr_of(&mut self.child);
                let _ = old.kill();
                panic!("pgmux -R exited with {status}: {err}\nlog:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the old process did not exit after -R:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a new pgmux with `-R` on the same ini and goes on with it; the old process is
    /// returned, still running, for the caller to watch (and reap).
    pub fn start_reboot(&mut self) -> Child {
        let child = Command::new(binary())
            .arg("-R")
            .arg("--quiet")
            .arg(self.dir.path().join("pgmux.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pgmux -R");
        std::mem::replace(&mut self.child, child)
    }

    /// Runs `pgmux -R <args> <ini>` to its end, leaving this process in place: its exit status
    /// and what it printed.
    pub fn failed_reboot(&self, args: &[&str]) -> (std::process::ExitStatus, String) {
        let out = Command::new(binary())
            .arg("-R")
            .args(args)
            .arg(self.dir.path().join("pgmux.ini"))
            .stdin(Stdio::null())
            .output()
            .expect("run pgmux -R");
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The logfile so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgmux.log")).unwrap_or_default()
    }

    /// Waits up to 10 s for a log line containing `needle`, and returns that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with {needle:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// A libpq connection string over TCP.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        let password = if password.is_empty() { String::new() } else { format!("password={password} ") };
        format!("host=127.0.0.1 port={} user={user} {password}dbname={db}", self.port)
    }

    /// Connects with tokio-postgres; the connection task runs on the caller's runtime.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.url(user, password, db), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// The console as `pgbouncer` over the unix socket (no password for the same OS user).
    pub async fn console(&self) -> tokio_postgres::Client {
        let url = format!("host={} port={} user=pgbouncer dbname=pgbouncer", self.dir.path().display(), self.port);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("console login");
        tokio::spawn(conn);
        client
    }
}

impl Drop for PgmuxProcess {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
