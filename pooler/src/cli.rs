//! PgBouncer's command line: `pgmux [-d] [-R] [-q] [-v]... [-u USER] CONFIG.ini`, `-V`, `-h`.

use std::path::PathBuf;

use clap::Parser;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "pgmux",
    about = "PgBouncer-compatible PostgreSQL connection pooler",
    version = None,
    disable_version_flag = true
)]
pub struct Cli {
    /// Run in the background; needs `pidfile` in the config.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Online restart: take over the listeners and clients of the pgmux running on this config.
    #[arg(short = 'R', long = "reboot")]
    pub reboot: bool,
    /// Log nothing to stderr.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// More log output; repeat for more.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Switch to this OS user after binding the listeners.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Print the version and exit.
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    /// The pgbouncer.ini to use.
    #[arg(required_unless_present = "version")]
    pub config: Option<PathBuf>,
}
