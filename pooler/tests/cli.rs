//! The `pgmux` binary as a service manager sees it: version, exit codes and messages for bad
//! configs, the pidfile, and shutdown on SIGTERM.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pgmux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgmux"))
}

fn write_ini(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("pgmux.ini");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn version_names_the_pgbouncer_interface_first() {
    let out = pgmux().arg("-V").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // PgBouncer's lines: the version first, then a `tls:` line that tools (and PgBouncer's own
    // test suite) look for to decide whether TLS is supported.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [format!("PgBouncer 1.25.2 (pgmux {})", env!("CARGO_PKG_VERSION")), format!("tls: {}", pgmux::TLS_LIBRARY)]
    );
}

#[test]
fn bad_config_fails_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(dir.path(), "[pgbouncer]\nlisten_port = 0\npool_mode = sometimes\n");
    let out = pgmux().arg(&ini).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&format!("{}:3: invalid pool_mode", ini.display())), "{err}");
    let out = pgmux().arg(dir.path().join("missing.ini")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("could not read"));
}

#[test]
fn daemon_needs_a_pidfile_and_busy_port_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ini = write_ini(dir.path(), "[pgbouncer]\nlisten_port = 0\nunix_socket_dir =\n");
    let out = pgmux().arg("-d").arg(&ini).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("pidfile"));

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let ini = write_ini(
        dir.path(),
        &format!("[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"),
    );
    let out = pgmux().arg(&ini).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot listen on 127.0.0.1"));
}

#[test]
fn serves_writes_pidfile_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pgmux.pid");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ini = write_ini(
        dir.path(),
        &format!(
            "[databases]\n* = host=/nonexistent\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir = {d}\npidfile = {p}\nauth_type = trust\n",
            d = dir.path().display(),
            p = pidfile.display()
        ),
    );
    let mut child = pgmux().arg("-q").arg(&ini).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    // Served, not just bound: an SSLRequest is answered once the runtime (and its signal
    // handlers) runs; the kernel accepts connections on a bound socket before that.
    while !answers_ssl_request(port) {
        assert!(start.elapsed() < Duration::from_secs(10), "pgmux did not start serving");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.path().join(format!(".s.PGSQL.{port}")).exists(), "unix socket is created");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_eq!(pid as u32, child.id());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(!pidfile.exists(), "pidfile is removed at exit");
    assert!(!dir.path().join(format!(".s.PGSQL.{port}")).exists(), "unix socket is removed at exit");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
}

/// True when pgmux answers an SSLRequest on `port` (with `N`: no TLS configured).
fn answers_ssl_request(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut answer = [0u8; 1];
    s.write_all(&request).is_ok() && s.read_exact(&mut answer).is_ok() && answer[0] == b'N'
}
