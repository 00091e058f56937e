//! pgmux's log, written as PgBouncer writes its own: the same line format
//! (`<time> [<pid>] LOG C-0x1a: db/user@addr:port <message>`), the same wording for the events
//! PgBouncer logs, and the same switches (`logfile`, `-q`, `verbose`/`-v`, `syslog`,
//! `log_connections`, `log_disconnections`, `log_pooler_errors`, `log_stats`). `log_format =
//! json` (a pgmux extension) writes one JSON object per line with the same fields instead.
//!
//! Events name their connection with [`conn_log!`](crate::conn_log); everything else uses
//! `tracing` as usual (error = ERROR, warn = WARNING, info = LOG, debug = DEBUG, trace = NOISE).

mod conn;
mod layer;
pub mod line;
mod syslog;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tracing_subscriber::layer::SubscriberExt;

pub use conn::{ptr_text, ConnTag, Side, NO_DB, NO_USER};

/// How to log, from the config and the command line.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// `verbose`, raised by each `-v`.
    pub verbose: u32,
    /// `-q`/`-d`: nothing on stderr.
    pub quiet: bool,
    /// `logfile`.
    pub logfile: Option<PathBuf>,
    /// `log_format = json`.
    pub json: bool,
    /// `syslog = 1`: (`syslog_ident`, `syslog_facility`).
    pub syslog: Option<(String, String)>,
}

impl LogOptions {
    /// The options of `g`; `cli_verbose` and `quiet` come from the command line (each `-v` adds
    /// one).
    pub fn from_general(g: &crate::config::General, cli_verbose: u32, quiet: bool) -> Self {
        LogOptions {
            verbose: g.verbose.max(cli_verbose),
            quiet,
            logfile: g.logfile.clone(),
            json: g.log_json,
            syslog: g.syslog.then(|| (g.syslog_ident.clone(), g.syslog_facility.clone())),
        }
    }
}

/// The installed sinks. The tracing subscriber is process-wide by nature, so the handle that
/// RELOAD uses to change it is too.
static SINKS: OnceLock<Arc<layer::Sinks>> = OnceLock::new();

/// `-v` count and `-q` from the command line, kept for RELOAD.
static CLI: OnceLock<(u32, bool)> = OnceLock::new();

/// Installs the logger for `g` with the command line's `-v` count and `-q`, or applies new
/// options to the installed one (tests that start several poolers in one process).
///
/// # Errors
/// The logfile cannot be opened.
pub fn init(g: &crate::config::General, cli_verbose: u32, quiet: bool) -> std::io::Result<()> {
    let _ = CLI.set((cli_verbose, quiet));
    let opts = LogOptions::from_general(g, cli_verbose, quiet);
    let sinks = SINKS.get_or_init(|| {
        let sinks = Arc::new(layer::Sinks::new());
        let subscriber = tracing_subscriber::registry().with(layer::PgLayer(sinks.clone()));
        // Another subscriber (a test's) may already be installed; pgmux then logs through it.
        let _ = tracing::subscriber::set_global_default(subscriber);
        sinks
    });
    apply(sinks, &opts)
}

fn apply(sinks: &layer::Sinks, opts: &LogOptions) -> std::io::Result<()> {
    sinks.set_level(line::Severity::max_for_verbose(opts.verbose));
    sinks.set_quiet(opts.quiet);
    sinks.set_json(opts.json);
    if sinks.file_path() != opts.logfile {
        sinks.set_file(opts.logfile.as_deref())?;
    }
    match &opts.syslog {
        Some((ident, facility)) => match syslog::SyslogSink::connect(ident, facility) {
            Ok(s) => sinks.set_syslog(Some(s)),
            Err(e) => {
                sinks.set_syslog(None);
                tracing::warn!("{e}");
            }
        },
        None => sinks.set_syslog(None),
    }
    Ok(())
}

/// Writes a FATAL line (a start-up that cannot go on), as PgBouncer's `die`: to the logfile and
/// syslog, and to stderr unless quiet. Returns whether stderr got it; false also before
/// [`init`], when nothing is written.
pub fn fatal(message: &str) -> bool {
    let Some(s) = SINKS.get() else { return false };
    s.write(line::Severity::Fatal, &line::Record { message: message.to_owned(), ..Default::default() });
    s.to_stderr()
}

/// Reopens the logfile under its name (SIGHUP, after logrotate moved it).
pub fn reopen() {
    if let Some(s) = SINKS.get() {
        if let Some(path) = s.file_path() {
            if let Err(e) = s.set_file(Some(&path)) {
                tracing::error!("cannot reopen logfile {}: {e}", path.display());
            }
        }
    }
}

/// Applies a reloaded `[pgbouncer]` section (verbose, logfile, log_format, syslog); the
/// command line's `-v` and `-q` still hold. A logfile that cannot be opened keeps the old one.
pub fn reconfigure(g: &crate::config::General) {
    let (Some(s), Some(&(cli_verbose, quiet))) = (SINKS.get(), CLI.get()) else {
        return;
    };
    if let Err(e) = apply(s, &LogOptions::from_general(g, cli_verbose, quiet)) {
        tracing::error!("cannot open logfile: {e}");
    }
}
