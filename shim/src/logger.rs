//! The daemon's logger: logfmt lines on stderr, which the daemon points at containerd's `log` FIFO.
//!
//! containerd copies that FIFO into its own log, so each line carries the same fields a Go
//! shim's logrus output does: `time`, `level`, `msg`, plus the task's namespace and id.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// `2006-01-02T15:04:05.000000000Z` in UTC, without a date crate.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        // 2024-02-29T12:34:56.5Z: a leap day.
        let at = UNIX_EPOCH + Duration::new(1_709_210_096, 500_000_000);
        assert_eq!(rfc3339(at), "2024-02-29T12:34:56.500000000Z");
    }

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
