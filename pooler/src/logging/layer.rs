//! The tracing layer that writes every event as PgBouncer writes its log: to stderr (unless
//! quiet), to `logfile` (opened in append mode, one write per line, reopened on SIGHUP for
//! logrotate) and to syslog when `syslog = 1`. Its options change on RELOAD without a restart.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use super::line::{self, ConnFields, Record, Severity};
use super::syslog::SyslogSink;

/// Where log lines go and at which level; shared by the layer and the reload path.
#[derive(Debug)]
pub struct Sinks {
    max: AtomicU8,
    quiet: AtomicBool,
    json: AtomicBool,
    file: Mutex<Option<(PathBuf, File)>>,
    syslog: Mutex<Option<SyslogSink>>,
}

fn rank(s: Severity) -> u8 {
    s as u8
}

impl Sinks {
    pub(super) fn new() -> Self {
        Sinks {
            max: AtomicU8::new(rank(Severity::Log)),
            quiet: AtomicBool::new(false),
            json: AtomicBool::new(false),
            file: Mutex::new(None),
            syslog: Mutex::new(None),
        }
    }

    pub(super) fn set_level(&self, max: Severity) {
        self.max.store(rank(max), Ordering::Relaxed);
    }

    pub(super) fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::Relaxed);
    }

    pub(super) fn set_json(&self, json: bool) {
        self.json.store(json, Ordering::Relaxed);
    }

    pub(super) fn set_syslog(&self, sink: Option<SyslogSink>) {
        *self.syslog.lock() = sink;
    }

    /// Opens `path` for appending, or closes the file when `None`. The same path is reopened
    /// (logrotate moved the old file away).
    pub(super) fn set_file(&self, path: Option<&Path>) -> std::io::Result<()> {
        let next = match path {
            Some(p) => Some((p.to_path_buf(), std::fs::OpenOptions::new().create(true).append(true).open(p)?)),
            None => None,
        };
        *self.file.lock() = next;
        Ok(())
    }

    pub(super) fn file_path(&self) -> Option<PathBuf> {
        self.file.lock().as_ref().map(|(p, _)| p.clone())
    }

    fn enabled(&self, s: Severity) -> bool {
        rank(s) <= self.max.load(Ordering::Relaxed)
    }

    /// True when lines also go to stderr (not `-q`, not `-d`).
    pub(super) fn to_stderr(&self) -> bool {
        !self.quiet.load(Ordering::Relaxed)
    }

    pub(super) fn write(&self, sev: Severity, rec: &Record) {
        let ts = line::timestamp(std::time::SystemTime::now());
        let pid = std::process::id();
        let text = if self.json.load(Ordering::Relaxed) {
            line::json(&ts, pid, sev, rec)
        } else {
            line::text(&ts, pid, sev, rec)
        };
        let mut bytes = text.into_bytes();
        bytes.push(b'\n');
        if !self.quiet.load(Ordering::Relaxed) {
            let _ = std::io::stderr().write_all(&bytes);
        }
        if let Some((_, f)) = self.file.lock().as_mut() {
            let _ = f.write_all(&bytes);
        }
        if let Some(s) = self.syslog.lock().as_mut() {
            s.send(sev, &line::body(rec));
        }
    }
}

/// The layer itself: a thin adapter from tracing events to [`Sinks`].
#[derive(Debug)]
pub struct PgLayer(pub(super) std::sync::Arc<Sinks>);

impl<S: Subscriber> Layer<S> for PgLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        // Verbosity changes on RELOAD, so detailed levels are asked again each time.
        if Severity::of(meta.level()) <= Severity::Log {
            Interest::always()
        } else {
            Interest::sometimes()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.0.enabled(Severity::of(meta.level()))
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let sev = Severity::of(event.metadata().level());
        if !self.0.enabled(sev) {
            return;
        }
        let mut v = Collect::default();
        event.record(&mut v);
        self.0.write(sev, &v.finish());
    }
}

/// Sorts an event's fields into the record: `conn`, `db`, `user`, `addr` make the connection
/// prefix (see `conn_log!`), `message` the text, anything else an extra field.
#[derive(Default)]
struct Collect {
    conn: ConnFields,
    has_conn: bool,
    message: String,
    extra: Vec<(&'static str, String)>,
}

impl Collect {
    fn finish(self) -> Record {
        Record { conn: self.has_conn.then_some(self.conn), message: self.message, extra: self.extra }
    }

    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "conn" => {
                self.conn.conn = value;
                self.has_conn = true;
            }
            "db" => self.conn.db = value,
            "user" => self.conn.user = value,
            "addr" => self.conn.addr = value,
            name => self.extra.push((name, value)),
        }
    }
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}
