//! systemd integration as a unit drives pgmux: `Type=notify` messages on NOTIFY_SOCKET (READY
//! with a STATUS line, RELOADING then READY on SIGHUP, STOPPING at shutdown) and socket
//! activation (LISTEN_FDS: the passed TCP and unix listeners are served, the ini's addresses
//! are not bound, and the unix socket file, systemd's, is left at exit).

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{process::binary, Cluster, SCRAM_PASS, SCRAM_USER};
use crate::metrics::free_port;

/// Writes an ini in `dir` listening on `port` (and a unix socket in `socket_dir`, empty: none).
fn ini(dir: &std::path::Path, port: u16, socket_dir: &str) -> std::path::PathBuf {
    let pg = Cluster::shared();
    std::fs::write(dir.join("userlist.txt"), format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n")).unwrap();
    let path = dir.join("pgmux.ini");
    std::fs::write(
        &path,
        format!(
            "[databases]\napp = host={} port={} dbname=app\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir = {socket_dir}\nauth_type = scram-sha-256\nauth_file = {d}/userlist.txt\nlogfile = {d}/pgmux.log\n",
            pg.socket_dir.display(),
            pg.port,
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

fn stop(child: &mut Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGQUIT);
    let _ = child.wait();
}

async fn select_one(conn: &str) -> Result<(), tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    c.simple_query("SELECT 1").await.map(|_| ())
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_says_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = ini(dir.path(), port, "");
    let notify = dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut child = Command::new(binary())
        .arg("--quiet")
        .arg(&path)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = recv(&sock);
    assert!(first.contains("READY=1"), "{first}");
    assert!(first.contains("STATUS=0 clients (0 active, 0 waiting), 0 servers, 0 pools"), "{first}");
    // Serving once READY is sent.
    select_one(&format!("host=127.0.0.1 port={port} user={SCRAM_USER} password={SCRAM_PASS} dbname=app"))
        .await
        .expect("served after READY");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    // A STATUS line may come in between (every 5 s).
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("READY=1")) {
        seen.push(recv(&sock));
    }
    let reloading = seen.iter().position(|m| m.contains("RELOADING=1")).expect("RELOADING before READY");
    assert!(seen[reloading].contains("MONOTONIC_USEC="), "{seen:?}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let mut last = recv(&sock);
    while !last.contains("STOPPING=1") {
        last = recv(&sock);
    }
    stop(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_the_passed_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let unix_path = sockets.path().join(format!(".s.PGSQL.{tcp_port}"));
    let unix = UnixListener::bind(&unix_path).unwrap();
    // The ini names another port and no unix socket: systemd's sockets win.
    let ini_port = free_port();
    let path = ini(dir.path(), ini_port, "");
    let mut cmd = Command::new(binary());
    cmd.arg("--quiet").arg(&path).env("LISTEN_FDS", "2").stdout(Stdio::null()).stderr(Stdio::null());
    cmd.fd_mappings(vec![
        FdMapping { parent_fd: tcp.into(), child_fd: 3 },
        FdMapping { parent_fd: unix.into(), child_fd: 4 },
    ])
    .unwrap();
    let mut child = cmd.spawn().unwrap();
    let tcp_url = format!("host=127.0.0.1 port={tcp_port} user={SCRAM_USER} password={SCRAM_PASS} dbname=app");
    let mut served = false;
    for _ in 0..100 {
        if select_one(&tcp_url).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "served on the passed TCP listener");
    let unix_url =
        format!("host={} port={tcp_port} user={SCRAM_USER} password={SCRAM_PASS} dbname=app", sockets.path().display());
    select_one(&unix_url).await.expect("served on the passed unix listener");
    assert!(std::net::TcpStream::connect(("127.0.0.1", ini_port)).is_err(), "the ini's port is not bound");
    let log = std::fs::read_to_string(dir.path().join("pgmux.log")).unwrap();
    assert!(log.contains(&format!("listening on 127.0.0.1:{tcp_port} (from systemd)")), "{log}");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let _ = child.wait();
    assert!(unix_path.exists(), "the unix socket file is systemd's: left in place");
    stop(&mut child);
}
