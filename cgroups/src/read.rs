//! Reading cgroupfs files: one reusable path and buffer per stats call, and typed errors that
//! name the file.
//!
//! cgroupfs files are tiny and generated on `read(2)`, so the cost of a stats call is the
//! number of files times open/read/close. Everything here avoids work on top of that: no
//! `fstat` size probing, no per-file allocation, no maps; callers match keys in place.

use std::fs::File;
use std::io::{self, Read};
use std::num::{ParseFloatError, ParseIntError};
use std::path::{Path, PathBuf};

/// Why a cgroup statistic could not be read. A missing file is never an error: the reader
/// skips it, as containerd's `IgnoreNotExist` does.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The file exists but reading it failed.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{path} is not utf-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A line does not have the shape this file always has.
    #[error("malformed line {line} in {path}: {text:?}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// A value that must be an unsigned integer is not one.
    #[error("invalid integer {value:?} in {path}")]
    Integer {
        /// The file.
        path: PathBuf,
        /// The offending value.
        value: String,
        /// The parse error.
        #[source]
        source: ParseIntError,
    },
    /// A pressure average that must be a decimal number is not one.
    #[error("invalid decimal {value:?} in {path}")]
    Decimal {
        /// The file.
        path: PathBuf,
        /// The offending value.
        value: String,
        /// The parse error.
        #[source]
        source: ParseFloatError,
    },
    /// A key the kernel always writes to this file is absent.
    #[error("key {key} missing from {path}")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The absent key.
        key: &'static str,
    },
}

/// How a file spells an unsigned value: v1 and v2 differ on `max` and negative values.
pub(crate) type ValueParser = fn(&str) -> Result<u64, ParseIntError>;

/// cgroup v1 as containerd reads it: `max` is 0 and a negative value (such as `-1` for
/// "unlimited") is 0.
pub(crate) fn parse_v1(text: &str) -> Result<u64, ParseIntError> {
    if text == "max" {
        return Ok(0);
    }
    match text.strip_prefix('-') {
        Some(magnitude) => magnitude.parse::<u64>().map(|_| 0),
        None => text.parse(),
    }
}

/// cgroup v2 as containerd reads it: `max` is `u64::MAX`.
pub(crate) fn parse_v2(text: &str) -> Result<u64, ParseIntError> {
    if text == "max" {
        return Ok(u64::MAX);
    }
    text.parse()
}

/// Reads cgroup files into one buffer that lives for a whole stats call.
#[derive(Debug, Default)]
pub(crate) struct FileReader {
    path: PathBuf,
    buf: Vec<u8>,
}

/// The text of one file, with its path for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Content<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

impl FileReader {
    pub(crate) fn new() -> Self {
        Self {
            path: PathBuf::with_capacity(256),
            buf: Vec::with_capacity(4096),
        }
    }

    /// Reads `dir/name`. `Ok(None)` when the file does not exist, or when the kernel refuses
    /// the read as unsupported (pressure files with PSI disabled): both mean "not exposed".
    pub(crate) fn read(
        &mut self,
        dir: &Path,
        name: &str,
    ) -> Result<Option<Content<'_>>, StatsError> {
        self.path.clear();
        self.path.push(dir);
        self.path.push(name);
        match File::open(&self.path).and_then(|mut file| fill(&mut file, &mut self.buf)) {
            Ok(()) => {}
            Err(err) if is_not_exposed(&err) => return Ok(None),
            Err(source) => {
                return Err(StatsError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        }
        let text = std::str::from_utf8(&self.buf).map_err(|_| StatsError::NotUtf8 {
            path: self.path.clone(),
        })?;
        Ok(Some(Content {
            path: &self.path,
            text,
        }))
    }

    /// Reads a file holding one value; `Ok(None)` when the file does not exist.
    pub(crate) fn read_value(
        &mut self,
        dir: &Path,
        name: &str,
        parse: ValueParser,
    ) -> Result<Option<u64>, StatsError> {
        self.read(dir, name)?
            .map(|content| content.single(parse))
            .transpose()
    }
}

/// Reads the whole file into `buf` with plain `read(2)` calls; std's `read_to_end` would
/// first `statx` and `lseek` the file, which is pointless on cgroupfs.
fn fill(file: &mut File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let start = buf.len();
        buf.resize(buf.capacity(), 0);
        match file.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(());
            }
            Ok(n) => buf.truncate(start + n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(err) => {
                buf.truncate(start);
                return Err(err);
            }
        }
    }
}

fn is_not_exposed(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::EOPNOTSUPP)
}

impl<'a> Content<'a> {
    pub(crate) fn malformed(&self, line: usize, text: &str) -> StatsError {
        StatsError::Malformed {
            path: self.path.to_path_buf(),
            line,
            text: text.to_owned(),
        }
    }

    pub(crate) fn integer(&self, value: &str, source: ParseIntError) -> StatsError {
        StatsError::Integer {
            path: self.path.to_path_buf(),
            value: value.to_owned(),
            source,
        }
    }

    /// Parses `value` with `parse`, naming this file on failure.
    pub(crate) fn parse(&self, value: &str, parse: ValueParser) -> Result<u64, StatsError> {
        parse(value).map_err(|source| self.integer(value, source))
    }

    /// The single value of a one-value file such as `memory.usage_in_bytes`.
    pub(crate) fn single(&self, parse: ValueParser) -> Result<u64, StatsError> {
        self.parse(self.text.trim(), parse)
    }

    /// Numbered non-empty lines.
    pub(crate) fn lines(&self) -> impl Iterator<Item = (usize, &'a str)> {
        self.text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line))
            .filter(|(_, line)| !line.trim().is_empty())
    }

    /// Calls `visit` with each `key value` line (flat keyed files: `memory.stat`, `cpu.stat`).
    pub(crate) fn for_each_pair(
        &self,
        parse: ValueParser,
        mut visit: impl FnMut(&str, u64),
    ) -> Result<(), StatsError> {
        for (number, line) in self.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(self.malformed(number, line));
            };
            visit(key, self.parse(value, parse)?);
        }
        Ok(())
    }

    /// The value of `key` in a flat keyed file, or `None` if the key is absent.
    pub(crate) fn pair(&self, key: &str, parse: ValueParser) -> Result<Option<u64>, StatsError> {
        let mut found = None;
        self.for_each_pair(parse, |name, value| {
            if name == key {
                found = Some(value);
            }
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_disagree_on_max_and_negatives() {
        assert_eq!(parse_v1("max").unwrap(), 0);
        assert_eq!(parse_v1("-1").unwrap(), 0);
        assert_eq!(parse_v1("42").unwrap(), 42);
        assert!(parse_v1("-x").is_err());
        assert_eq!(parse_v2("max").unwrap(), u64::MAX);
        assert!(parse_v2("-1").is_err());
    }

    #[test]
    fn missing_file_is_none_and_garbage_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = FileReader::new();
        assert!(reader.read(dir.path(), "absent").unwrap().is_none());
        std::fs::write(dir.path().join("bad"), "a 1\nb two\n").unwrap();
        let content = reader.read(dir.path(), "bad").unwrap().unwrap();
        let err = content.for_each_pair(parse_v2, |_, _| {}).unwrap_err();
        assert!(matches!(&err, StatsError::Integer { value, path, .. }
            if value == "two" && path.ends_with("bad")));
        std::fs::write(dir.path().join("short"), "a 1\nlonely\n").unwrap();
        let content = reader.read(dir.path(), "short").unwrap().unwrap();
        let err = content.for_each_pair(parse_v2, |_, _| {}).unwrap_err();
        assert!(matches!(err, StatsError::Malformed { line: 2, .. }));
        std::fs::write(dir.path().join("binary"), [0xff, 0xfe]).unwrap();
        assert!(matches!(
            reader.read(dir.path(), "binary"),
            Err(StatsError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn large_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..2000).map(|i| format!("key{i} {i}\n")).collect();
        std::fs::write(dir.path().join("big"), &text).unwrap();
        let mut reader = FileReader::new();
        let content = reader.read(dir.path(), "big").unwrap().unwrap();
        assert_eq!(content.text, text);
        assert_eq!(content.pair("key1999", parse_v2).unwrap(), Some(1999));
    }
}
