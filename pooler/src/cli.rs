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

/// A command line that does not start pgmux: what to print and the exit status.
#[derive(Debug)]
pub struct Usage {
    /// The text (clap's, with PgBouncer's `no configuration file specified` when the ini is
    /// missing).
    pub text: String,
    /// 0 for `--help`, 1 for a usage error (as PgBouncer; clap's own is 2).
    pub code: u8,
    /// The text goes to stdout (`--help`), not stderr.
    pub to_stdout: bool,
}

impl Cli {
    /// Parses `args` (program name first).
    ///
    /// # Errors
    /// `--help`, or a usage error: no config file, an unknown option, a second file.
    pub fn parse_args<I, T>(args: I) -> Result<Cli, Usage>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::error::ErrorKind;
        Cli::try_parse_from(args).map_err(|e| {
            let rendered = e.render().to_string();
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    Usage { text: rendered, code: 0, to_stdout: true }
                }
                ErrorKind::MissingRequiredArgument => Usage {
                    text: format!("pgmux: no configuration file specified\n{rendered}"),
                    code: 1,
                    to_stdout: false,
                },
                _ => Usage { text: rendered, code: 1, to_stdout: false },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_1_as_pgbouncer() {
        let e = Cli::parse_args(["pgmux"]).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.text.starts_with("pgmux: no configuration file specified\n"), "{}", e.text);
        let e = Cli::parse_args(["pgmux", "-x", "a.ini"]).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.text.contains("'-x'") && e.text.contains("--help"), "{}", e.text);
        assert_eq!(Cli::parse_args(["pgmux", "a.ini", "b.ini"]).unwrap_err().code, 1);
        let help = Cli::parse_args(["pgmux", "--help"]).unwrap_err();
        assert!(help.code == 0 && help.to_stdout && help.text.contains("Usage"), "{help:?}");
        assert!(Cli::parse_args(["pgmux", "-V"]).unwrap().version);
        assert!(Cli::parse_args(["pgmux", "-q", "-u", "x", "a.ini"]).unwrap().quiet);
    }
}
