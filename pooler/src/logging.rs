//! Log output: stderr (unless -q) and/or the logfile, at a level set by `verbose` and -v.

use std::path::Path;

use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `verbose` 0 logs info, 1 debug, 2+ trace; RUST_LOG overrides.
///
/// # Errors
/// The logfile cannot be opened.
pub fn init(verbose: u32, quiet: bool, logfile: Option<&Path>) -> std::io::Result<()> {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let file = match logfile {
        Some(p) => Some(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        None => None,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match (file, quiet) {
        (Some(f), true) => builder.with_ansi(false).with_writer(std::sync::Mutex::new(f)).try_init(),
        (Some(f), false) => {
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(f).and(std::io::stderr)).try_init()
        }
        (None, true) => builder.with_writer(std::io::sink).try_init(),
        (None, false) => builder.with_writer(std::io::stderr).try_init(),
    };
    // A second init (tests start several poolers in one process) keeps the first subscriber.
    let _ = result;
    Ok(())
}
