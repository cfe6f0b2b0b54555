//! The daemon's logger: logfmt lines on stderr, which the daemon points at containerd's `log` FIFO.
//!
//! containerd copies that FIFO into its own log, so each line carries the same fields a Go
//! shim's logrus output does: `time`, `level`, `msg`, plus the task's namespace and id.

use std::io::Write;
use std::time::SystemTime;

use wren_shim_protocol::timestamp::rfc3339;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Errors from installing the logger.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// A logger was already installed in this process.
    #[error("a logger is already installed")]
    AlreadySet(#[source] log::SetLoggerError),
}

/// How much the daemon logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// info and above (containerd's default).
    Info,
    /// debug and above (`-debug`).
    Debug,
}

impl Verbosity {
    fn filter(self) -> LevelFilter {
        match self {
            Verbosity::Info => LevelFilter::Info,
            Verbosity::Debug => LevelFilter::Debug,
        }
    }
}

/// Writes one logfmt line per record to the process's stderr.
#[derive(Debug)]
pub struct StderrLogger {
    level: LevelFilter,
    /// ` namespace=.. id=..`, rendered once.
    suffix: String,
}

impl StderrLogger {
    /// Installs the logger for the task `namespace`/`id`.
    ///
    /// # Errors
    /// Returns [`LoggerError::AlreadySet`] if a logger exists already.
    pub fn install(verbosity: Verbosity, namespace: &str, id: &str) -> Result<(), LoggerError> {
        let level = verbosity.filter();
        let suffix = format!(" namespace={} id={}", quote(namespace), quote(id));
        log::set_boxed_logger(Box::new(StderrLogger { level, suffix }))
            .map_err(LoggerError::AlreadySet)?;
        log::set_max_level(level);
        Ok(())
    }

    fn render(&self, record: &Record<'_>) -> String {
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        format!(
            "time=\"{}\" level={level} msg={}{}\n",
            rfc3339(SystemTime::now()),
            quote(&record.args().to_string()),
            self.suffix
        )
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One write per line keeps lines whole between threads; a failed write (containerd
        // gone, EPIPE) has nowhere better to be reported.
        let _ = std::io::stderr()
            .lock()
            .write_all(self.render(record).as_bytes());
    }

    fn flush(&self) {}
}

/// A logfmt value: bare when it is a plain word, else double-quoted with escapes.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/:@".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_logfmt() {
        let logger = StderrLogger {
            level: LevelFilter::Info,
            suffix: " namespace=ns id=c1".into(),
        };
        let line = logger.render(
            &Record::builder()
                .level(Level::Warn)
                .args(format_args!("a \"b\""))
                .build(),
        );
        assert!(line.starts_with("time=\""), "{line}");
        assert!(
            line.ends_with(" level=warning msg=\"a \\\"b\\\"\" namespace=ns id=c1\n"),
            "{line}"
        );
        assert_eq!(quote("k8s.io"), "k8s.io");
        assert_eq!(quote(""), "\"\"");
    }
}
