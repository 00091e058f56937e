//! The `pgmux` binary: parse the command line, load the ini, bind, optionally daemonize and
//! drop privileges, then serve until a shutdown signal. Exit status 0 after a requested shutdown,
//! 1 when start-up fails (usage error, bad config, nowhere to listen, port in use, pidfile
//! held), as PgBouncer's.

use std::process::ExitCode;
use std::sync::Arc;

use pgmux::app::Pooler;
use pgmux::cli::Cli;
use pgmux::shared::{RunState, Shared};
use pgmux::{config, daemon, logging, reload, takeover};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `-q` given: nothing on stderr.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A start-up that cannot go on: exit status 1, the reason as PgBouncer's FATAL in the log once
/// logging is set up (so a daemon's failure is in its logfile), and on stderr unless `-q` (with
/// `-d`, which keeps the log off the terminal, still on stderr: the operator is there).
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    let msg = msg.to_string();
    let on_stderr = logging::fatal(&msg);
    if !on_stderr && !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("pgmux: {msg}");
    }
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()).is_some_and(|a| pgmux::tools::NAMES.contains(&a)) {
        return pgmux::tools::main(args);
    }
    let cli = match Cli::parse_args(args) {
        Ok(c) => c,
        Err(usage) => {
            if usage.to_stdout {
                print!("{}", usage.text);
            } else {
                eprint!("{}", usage.text);
            }
            return ExitCode::from(usage.code);
        }
    };
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    if cli.version {
        println!("{}", pgmux::version_lines());
        return ExitCode::SUCCESS;
    }
    let Some(path) = cli.config else { return fail("no configuration file specified") };
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => return config_failed(&path, &e, cli.quiet),
    };
    let g = config.general.clone();
    if let Err(e) = logging::init(&g, cli.verbose as u32, cli.quiet || cli.daemon) {
        return fail(format!("cannot open logfile: {e}"));
    }
    reload::log_problems(&config);
    if cli.daemon && g.pidfile.is_none() {
        return fail("-d needs pidfile to be set in the config");
    }
    let switch_to = cli.user.clone().or_else(|| g.user.clone());
    // Before any listener is bound, as PgBouncer looks the user up before it binds.
    let target_uid = match &switch_to {
        Some(user) => match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => Some(u.uid),
            Ok(None) => return fail(format!("could not find user '{user}' to switch to")),
            Err(e) => return fail(format!("could not find user '{user}': {e}")),
        },
        None => None,
    };
    // PgBouncer refuses to run as root; pgmux only warns (test rigs and containers run it so).
    if nix::unistd::geteuid().is_root() && target_uid.is_none_or(|uid| uid.is_root()) {
        tracing::warn!(
            "running as root: PgBouncer refuses to (\"PgBouncer should not run as root\"); use -u USER or user = USER"
        );
    }
    if !cli.reboot && g.listen_addr.is_empty() && g.unix_socket_dir.is_empty() && !pgmux::net::activation::passed() {
        return fail("nowhere to listen on");
    }
    let fds = daemon::raise_fd_limit();
    log_fd_use(&config, fds);
    if fds > 0 && (g.max_client_conn as u64) + 64 > fds {
        tracing::warn!(
            "max_client_conn = {} is above the open-files limit {fds}: raise it (ulimit -n)",
            g.max_client_conn
        );
    }
    // Before the pools are made: each keeps its counters per worker thread.
    pgmux::workers::plan(g.threads(), g.worker_busy_percent);
    // -R: the running process's listeners (and then its clients) instead of binding; its
    // pidfile is ours from now on.
    let taken = match cli.reboot.then(|| takeover::take::connect(&g)) {
        Some(Ok(t)) => Some(t),
        // As PgBouncer: nothing to take over is a normal start.
        Some(Err(takeover::take::TakeoverError::NotRunning(why))) => {
            tracing::info!("old process not found, try to continue normally ({why})");
            None
        }
        Some(Err(e)) => return fail(format!("online restart failed: {e}")),
        None => None,
    };
    let (pooler, handed) = if let Some(t) = taken {
        tracing::info!("takeover: listening sockets taken over from the running process");
        (Pooler::from_taken(config, t.bound, t.exporter), Some(t.channel))
    } else {
        if let Some(p) = &g.pidfile {
            if let Err(e) = daemon::check_pidfile(p) {
                return fail(e);
            }
        }
        match Pooler::bind(config) {
            Ok(p) => (p, None),
            Err(e) => return fail(e),
        }
    };
    if let Some(user) = &switch_to {
        if let Err(e) = daemon::switch_user(user) {
            return fail(format!("cannot switch to user {user}: {e}"));
        }
    }
    if cli.daemon {
        if let Err(e) = daemon::detach() {
            return fail(format!("cannot daemonize: {e}"));
        }
    }
    if let Some(p) = &g.pidfile {
        if let Err(e) = daemon::write_pidfile(p) {
            return fail(format!("cannot write pidfile: {e}"));
        }
    }
    // One single-threaded runtime per worker thread, this one included (workers.rs).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start runtime: {e}")),
    };
    if let Err(e) = pgmux::workers::start() {
        return fail(format!("cannot start worker threads: {e}"));
    }
    let result = runtime.block_on(async {
        let shared = pooler.shared();
        pgmux::workers::on_main_runtime();
        // Handlers first: a signal that arrives once `process up` is logged is handled, never
        // the default action.
        match Signals::install() {
            Some(signals) => {
                tokio::spawn(handle_signals(shared.clone(), signals));
            }
            None => tracing::error!("cannot install signal handlers"),
        }
        tracing::info!("process up: {}, tls: {}", pgmux::version_string(), pgmux::TLS_LIBRARY);
        if let Some(channel) = handed {
            let adopt: takeover::take::Adopt = |shared, fd, record| {
                tokio::spawn(pgmux::client::adopt(shared, fd, record));
            };
            tokio::spawn(takeover::take::adopt_clients(shared.clone(), channel, adopt));
        }
        let result = pooler.run().await;
        (result, shared.giving.given())
    });
    let (result, taken_over) = result;
    // After a takeover the pidfile names the new process.
    if let (Some(p), false) = (&g.pidfile, taken_over) {
        let _ = std::fs::remove_file(p);
    }
    match result {
        Ok(()) => {
            tracing::info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// A config that does not load: the reason and PgBouncer's `cannot load config file`, on stderr
/// unless `-q`, and appended to the logfile the ini names (found by a lenient scan, since the
/// ini did not load), as PgBouncer writes them to its log. Exit status 1.
fn config_failed(path: &std::path::Path, e: &config::ConfigError, quiet: bool) -> ExitCode {
    if !quiet {
        eprintln!("pgmux: {e}");
    }
    let logfile = std::fs::read_to_string(path).ok().and_then(|text| config::ini::find_logfile(&text));
    if let Some(f) = logfile {
        let ts = logging::line::timestamp(std::time::SystemTime::now());
        let line = |sev, message: String| {
            let rec = logging::line::Record { message, ..Default::default() };
            logging::line::text(&ts, std::process::id(), sev, &rec)
        };
        let text = format!(
            "{}\n{}\n",
            line(logging::line::Severity::Error, e.to_string()),
            line(logging::line::Severity::Fatal, "cannot load config file".into())
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&f)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
        if let (Err(err), false) = (written, quiet) {
            eprintln!("pgmux: cannot open logfile {f}: {err}");
        }
    }
    ExitCode::from(1)
}

/// PgBouncer's start-up line on open files: the limit (raised to the hard one) and the most
/// pgmux could use, every client and every pool full (a pool per user of the auth_file for a
/// database without a forced user).
fn log_fd_use(config: &config::Config, limit: u64) {
    let users = config.auth_file.len() as u64;
    let servers: u64 = config
        .databases
        .values()
        .map(|d| {
            let size = d.pool_size.unwrap_or(config.general.default_pool_size) as u64;
            if d.user.is_some() {
                size
            } else {
                size * users
            }
        })
        .sum();
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(0, |(_, h)| h);
    tracing::info!(
        "kernel file descriptor limit: {limit} (hard: {hard}); max_client_conn: {}, max expected fd use: {}",
        config.general.max_client_conn,
        config.general.max_client_conn as u64 + 10 + servers
    );
}

/// The signal streams pgmux handles.
struct Signals {
    term: Signal,
    int: Signal,
    quit: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    /// Registers the handlers (inside the runtime); `None` if the OS refuses.
    fn install() -> Option<Signals> {
        Some(Signals {
            term: signal(SignalKind::terminate()).ok()?,
            int: signal(SignalKind::interrupt()).ok()?,
            quit: signal(SignalKind::quit()).ok()?,
            hup: signal(SignalKind::hangup()).ok()?,
            usr1: signal(SignalKind::user_defined1()).ok()?,
            usr2: signal(SignalKind::user_defined2()).ok()?,
        })
    }
}

/// PgBouncer 1.23+ signals, logged in its words: SIGTERM waits for clients to leave, SIGINT
/// waits for servers to be released, a second one of either (or SIGQUIT) exits at once. SIGHUP
/// reopens the logfile and reloads, SIGUSR1 pauses, SIGUSR2 resumes (not while shutting down).
/// A shutdown signal while SUSPENDed: PgBouncer dies at once (nothing would flush what it
/// froze), exit status 1, and so does pgmux, with PgBouncer's words; the pidfile goes, as
/// PgBouncer's atexit removes it.
fn suspended_goes_down_now(shared: &Shared) -> Option<RunState> {
    if !shared.is_suspended() {
        return None;
    }
    logging::fatal("suspend was in progress, going down immediately");
    if let Some(p) = &shared.config().general.pidfile {
        let _ = std::fs::remove_file(p);
    }
    std::process::exit(1)
}

async fn handle_signals(shared: Arc<Shared>, signals: Signals) {
    let Signals { mut term, mut int, mut quit, mut hup, mut usr1, mut usr2 } = signals;
    loop {
        // Read when a signal arrives, not before waiting: a SHUTDOWN may come in between.
        let running = || shared.state() == RunState::Running;
        let next = tokio::select! {
            _ = term.recv() => {
                if running() {
                    tracing::info!("got SIGTERM, shutting down, waiting for all clients disconnect");
                    suspended_goes_down_now(&shared).unwrap_or(RunState::WaitForClients)
                } else {
                    tracing::info!("got SIGTERM while shutting down, fast exit");
                    RunState::Immediate
                }
            }
            _ = int.recv() => {
                if running() {
                    tracing::info!("got SIGINT, shutting down, waiting for all servers connections to be released");
                    suspended_goes_down_now(&shared).unwrap_or(RunState::WaitForServers)
                } else {
                    tracing::info!("got SIGINT while shutting down, fast exit");
                    RunState::Immediate
                }
            }
            _ = quit.recv() => {
                tracing::info!("got SIGQUIT, fast exit");
                RunState::Immediate
            }
            _ = usr1.recv() => {
                if shared.pools.all_paused() || shared.is_suspended() {
                    tracing::info!("got SIGUSR1, but already paused/suspended");
                } else {
                    tracing::info!("got SIGUSR1, pausing all activity");
                    shared.pools.set_paused(None, true);
                }
                continue;
            }
            _ = usr2.recv() => {
                if !running() {
                    tracing::info!("got SIGUSR2 while shutting down, ignoring");
                } else if shared.is_suspended() {
                    tracing::info!("got SIGUSR2, continuing from SUSPEND");
                    shared.set_suspended(false);
                } else if shared.pools.all_paused() {
                    tracing::info!("got SIGUSR2, continuing from PAUSE");
                    shared.pools.set_paused(None, false);
                } else {
                    tracing::info!("got SIGUSR2, but not paused/suspended");
                }
                continue;
            }
            _ = hup.recv() => {
                tracing::info!("got SIGHUP, re-reading config");
                logging::reopen();
                match reload::reload(&shared) {
                    Ok(()) => {}
                    // Logged with PgBouncer's words already; the rest of the files applies.
                    Err(reload::ReloadError::Tls(_)) => {}
                    Err(e) => {
                        tracing::error!("{e}");
                        tracing::error!("RELOAD failed, keeping the old configuration");
                    }
                }
                continue;
            }
        };
        shared.set_state(next);
    }
}
