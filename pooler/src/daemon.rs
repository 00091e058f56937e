//! Process-level start-up chores: the pidfile, dropping to another OS user, and detaching.

use std::io;
use std::path::Path;

/// Refuses to start when the pidfile names a live process.
///
/// # Errors
/// Another instance is running, or the file cannot be read.
pub fn check_pidfile(path: &Path) -> io::Result<()> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
                if alive && pid != std::process::id() as i32 {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("pidfile {} names running process {pid}: is pgmux already running?", path.display()),
                    ));
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes our pid.
///
/// # Errors
/// The file cannot be written.
pub fn write_pidfile(path: &Path) -> io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// Switches to `user` (its primary group first).
///
/// # Errors
/// Unknown user or no permission.
pub fn switch_user(user: &str) -> io::Result<()> {
    let u = nix::unistd::User::from_name(user)
        .map_err(io::Error::from)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such user: {user}")))?;
    nix::unistd::setgid(u.gid).map_err(io::Error::from)?;
    nix::unistd::setuid(u.uid).map_err(io::Error::from)?;
    Ok(())
}

/// Raises the soft open-files limit to the hard one: max_client_conn clients plus the pools'
/// servers need a descriptor each, and the usual soft default (1024) is far below PgBouncer
/// deployments' max_client_conn. Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Detaches from the terminal; the working directory is kept so relative paths still work.
///
/// # Errors
/// fork or setsid failed.
pub fn detach() -> io::Result<()> {
    nix::unistd::daemon(true, false).map_err(io::Error::from)
}
