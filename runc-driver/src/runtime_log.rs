//! Extracting the runtime's error message from its JSON log (docs/protocol.md §4.4).
//!
//! runc and crun write one JSON object per line (`{"level":"error","msg":"..."}`) to the
//! `--log` file, and to stderr when no `--log` is given. The message that explains a
//! failure is the *last* `error` entry. The log file is shared by every call on a
//! container and grows forever, so a [`LogCursor`] remembers where it ended before a
//! call and only what that call appended is read: an old failure's message can never be
//! reported for a new one, and the cost does not grow with the file.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The end of the runtime log as it was before a call.
#[derive(Debug)]
pub(crate) struct LogCursor {
    path: PathBuf,
    offset: u64,
}

impl LogCursor {
    /// Marks the current end of `path` (0 when it does not exist yet).
    pub(crate) fn mark(path: &Path) -> Self {
        let offset = std::fs::metadata(path).map_or(0, |meta| meta.len());
        Self {
            path: path.to_path_buf(),
            offset,
        }
    }

    /// The last error message appended since [`LogCursor::mark`], if any.
    ///
    /// Best effort: an unreadable log only means the caller falls back to stderr.
    pub(crate) fn last_error(&self) -> Option<String> {
        let mut file = File::open(&self.path).ok()?;
        let len = file.metadata().ok()?.len();
        // A shorter file was truncated or replaced since the mark: all of it is new.
        let start = if len < self.offset { 0 } else { self.offset };
        file.seek(SeekFrom::Start(start)).ok()?;
        let lines = BufReader::new(file).split(b'\n').map_while(Result::ok);
        last_error_of(lines)
    }
}

/// One line of a runtime's JSON log; fields other runtimes add are ignored.
#[derive(Debug, Deserialize)]
struct Entry {
    level: String,
    msg: String,
    /// runc attaches a cause to some entries (`"error":"rmdir ...: device busy"`).
    error: Option<String>,
}

/// The last `error` (or `fatal`) entry among JSON log lines, as `msg[: error]`.
pub(crate) fn last_error_of<L: AsRef<[u8]>>(lines: impl IntoIterator<Item = L>) -> Option<String> {
    lines
        .into_iter()
        .filter_map(|line| serde_json::from_slice::<Entry>(line.as_ref()).ok())
        .filter(|entry| entry.level == "error" || entry.level == "fatal")
        .last()
        .map(|entry| match entry.error {
            Some(cause) => format!("{}: {cause}", entry.msg),
            None => entry.msg,
        })
}

/// The message explaining a failed call: the log's last error, else stderr's last JSON
/// error, else stderr's last non-empty line, else stdout's.
pub(crate) fn failure_message(cursor: Option<&LogCursor>, stderr: &[u8], stdout: &[u8]) -> String {
    cursor
        .and_then(LogCursor::last_error)
        .or_else(|| last_error_of(stderr.split(|&b| b == b'\n')))
        .or_else(|| last_line(stderr))
        .or_else(|| last_line(stdout))
        .unwrap_or_else(|| "the runtime gave no error message".to_owned())
}

fn last_line(text: &[u8]) -> Option<String> {
    text.split(|&b| b == b'\n')
        .rev()
        .map(|line| String::from_utf8_lossy(line).trim().to_owned())
        .find(|line| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const RUNC_CREATE: &str = concat!(
        r#"{"level":"warning","msg":"deprecated","time":"2026-01-01T00:00:00Z"}"#,
        "\n",
        r#"{"level":"error","msg":"first","time":"2026-01-01T00:00:00Z"}"#,
        "\nnot json at all\n",
        r#"{"level":"error","msg":"runc create failed: exec: \"nope\"","time":"t"}"#,
        "\n",
        r#"{"level":"info","msg":"later info","time":"t"}"#,
        "\n"
    );

    #[test]
    fn the_last_error_entry_wins() {
        let message = last_error_of(RUNC_CREATE.lines());
        assert_eq!(
            message.as_deref(),
            Some("runc create failed: exec: \"nope\"")
        );
    }

    #[test]
    fn crun_entries_and_attached_causes_are_read() {
        let crun = r#"{"msg":"cgroups in hybrid mode not supported","level":"error","time":"t"}"#;
        assert_eq!(
            last_error_of([crun]).as_deref(),
            Some("cgroups in hybrid mode not supported")
        );
        let cause = r#"{"error":"rmdir x: busy","level":"error","msg":"Failed to remove cgroup"}"#;
        assert_eq!(
            last_error_of([cause]).as_deref(),
            Some("Failed to remove cgroup: rmdir x: busy")
        );
    }

    #[test]
    fn the_cursor_reads_only_what_was_appended_after_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        std::fs::write(&path, RUNC_CREATE).unwrap();
        let cursor = LogCursor::mark(&path);
        assert_eq!(
            cursor.last_error(),
            None,
            "old failures are not reported again"
        );

        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(
            log,
            r#"{{"level":"error","msg":"container not running","time":"t"}}"#
        )
        .unwrap();
        assert_eq!(
            cursor.last_error().as_deref(),
            Some("container not running")
        );

        std::fs::write(&path, "{\"level\":\"error\",\"msg\":\"fresh\"}\n").unwrap();
        assert_eq!(
            cursor.last_error().as_deref(),
            Some("fresh"),
            "a truncated log is read whole"
        );
    }

    #[test]
    fn failure_message_falls_back_to_stderr_then_stdout() {
        let json_stderr = b"{\"level\":\"error\",\"msg\":\"container does not exist\"}\n";
        assert_eq!(
            failure_message(None, json_stderr, b""),
            "container does not exist"
        );
        assert_eq!(failure_message(None, b"oops\n\n", b"out"), "oops");
        assert_eq!(failure_message(None, b"", b"only stdout\n"), "only stdout");
        assert_eq!(
            failure_message(None, b"", b""),
            "the runtime gave no error message"
        );
    }
}
