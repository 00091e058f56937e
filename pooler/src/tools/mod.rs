//! pgmux's subcommands beside the pooler itself: `pgmux switchover` (SWITCHOVER through the
//! console of a running pgmux) and `pgmux haproxy-config` (HAProxy services whose checks
//! pgmux answers). `pgmux CONFIG.ini` stays PgBouncer's command line.

mod haproxy;
mod switchover;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::ConfigError;
use crate::patroni::PatroniError;

/// Why a subcommand failed; `main` prints it after `pgmux: `.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The pgbouncer.ini does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ini lacks a setting the subcommand needs (`patroni_url is not set: ...`).
    #[error("{0}")]
    Setting(String),
    /// Patroni's REST API could not be read.
    #[error(transparent)]
    Patroni(#[from] PatroniError),
    /// The running pgmux's console could not be reached, or refused the command (its message).
    #[error("{0}")]
    Console(String),
    /// The output could not be written.
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

/// The subcommands.
#[derive(Debug, Parser)]
#[command(name = "pgmux", about = "pgmux tools for a Patroni node (docs/HA.md)")]
pub enum Tool {
    /// Run a planned Patroni switchover through a running pgmux: new transactions are held, those
    /// in flight finish, Patroni switches, the pools follow the new leader, nothing fails.
    Switchover {
        /// The pgbouncer.ini of the running pgmux (its console address and admin user).
        config: PathBuf,
        /// The member to switch to; the best running replica when left out.
        candidate: Option<String>,
        /// Console user (default: the first of admin_users); the password comes from PGPASSWORD
        /// or a plain-text auth_file entry.
        #[arg(short = 'U', long)]
        user: Option<String>,
    },
    /// Print the pgmux(1) man page (roff), generated from the command line definition.
    #[command(hide = true)]
    Manpage,
    /// Print HAProxy `listen` sections for the cluster's primary (5433) and replica (5434)
    /// services, with checks answered by pgmux on every member.
    HaproxyConfig {
        /// The pgbouncer.ini of this node's pgmux (patroni_url, ports).
        config: PathBuf,
        /// Address HAProxy binds the services on.
        #[arg(long, default_value = "*")]
        bind: String,
    },
}

/// The subcommand names, for `main` to tell them from a config path.
pub const NAMES: &[&str] = &["switchover", "haproxy-config", "manpage"];

/// Runs the subcommand in `args` (the program name first).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let tool = Tool::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let result = runtime.block_on(async {
        match tool {
            Tool::Switchover { config, candidate, user } => switchover::run(&config, candidate, user).await,
            Tool::HaproxyConfig { config, bind } => haproxy::run(&config, &bind).await,
            Tool::Manpage => manpage(),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// pgmux(1): the pooler's options (PgBouncer's), then the subcommands.
fn manpage() -> Result<(), ToolError> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    let cmd = crate::cli::Cli::command().version(env!("CARGO_PKG_VERSION")).after_long_help(
        "SUBCOMMANDS\n  pgmux switchover CONFIG [CANDIDATE]   planned Patroni switchover through the console\n  \
             pgmux haproxy-config CONFIG            HAProxy services whose checks pgmux answers\n\n\
             Configuration: pgbouncer.ini as PgBouncer 1.25 reads it (pgbouncer(5)), plus pgmux's keys\n\
             (docs/CONFIG.md, docs/HA.md). Signals: SIGHUP reloads, SIGTERM waits for clients, SIGINT for\n\
             servers, SIGUSR1 pauses, SIGUSR2 resumes.",
    );
    clap_mangen::Man::new(cmd).render(&mut out)?;
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(())
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("pgmux: {msg}");
    ExitCode::from(1)
}
