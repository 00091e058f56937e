//! Process-level start-up chores: the pidfile, dropping to another OS user, and detaching.

use std::io;
use std::path::Path;

/// Checks the pidfile before start-up, as PgBouncer: none, or one naming a process that is
/// gone (removed, `stale pidfile, removing`), lets pgmux start; one naming a live process, or
/// one that cannot be read as a pid, means another instance may run.
///
/// # Errors
/// Another instance may run, or the file cannot be read or removed.
pub fn check_pidfile(path: &Path) -> io::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let taken = || {
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("pidfile '{}' exists, another instance running?", path.display()),
        )
    };
    let pid = text.trim().parse::<i32>().ok().filter(|p| *p > 0).ok_or_else(taken)?;
    if pid == std::process::id() as i32 {
        return Ok(());
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => {
            tracing::info!("stale pidfile, removing");
            std::fs::remove_file(path)
                .map_err(|e| io::Error::new(e.kind(), format!("could not remove stale pidfile: {e}")))
        }
        _ => Err(taken()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfile_of_a_live_process_or_unreadable_stops_start_up_and_a_stale_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgmux.pid");
        assert!(check_pidfile(&path).is_ok(), "no pidfile");
        for text in ["garbage\n", "0\n", "", "1\n"] {
            std::fs::write(&path, text).unwrap();
            let e = check_pidfile(&path).unwrap_err().to_string();
            assert!(e.ends_with("exists, another instance running?"), "{text:?}: {e}");
        }
        // A process that has ended: its pid names nobody now.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        std::fs::write(&path, format!("{}\n", child.id())).unwrap();
        check_pidfile(&path).unwrap();
        assert!(!path.exists(), "the stale pidfile is removed");
    }
}
