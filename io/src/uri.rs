//! Parsing of the stdio strings that Create and Exec carry.
//!
//! The scheme is taken from stdout (docs/protocol.md §4.1): empty or a plain path means FIFOs,
//! `fifo://` likewise, `binary://` and `binary-v2://` start a logging binary, `file://`
//! appends to a file. Anything else is refused rather than guessed at.

use std::path::{Path, PathBuf};

/// The stdio of one process as Create and Exec describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    /// Path of the stdin FIFO, or empty for none.
    pub stdin: String,
    /// stdout: a FIFO path or a URI whose scheme decides the IO kind; empty for none.
    pub stdout: String,
    /// Path of the stderr FIFO, or empty for none (ignored for non-FIFO schemes).
    pub stderr: String,
    /// Whether the process gets a pty instead of pipes.
    pub terminal: bool,
}

impl Stdio {
    /// Whether the process has no IO at all (everything goes to `/dev/null`).
    pub fn is_null(&self) -> bool {
        self.stdin.is_empty() && self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// A failure to understand a stdio string.
#[derive(Debug, thiserror::Error)]
pub enum UriError {
    /// The scheme is none of fifo, binary, binary-v2, file.
    #[error("unknown stdio scheme {scheme:?} in {uri:?}")]
    UnknownScheme {
        /// The scheme as written.
        scheme: String,
        /// The whole string.
        uri: String,
    },
    /// A `binary://` or `file://` URI whose path is not absolute.
    #[error("stdio uri {uri:?} needs an absolute path")]
    RelativePath {
        /// The whole string.
        uri: String,
    },
    /// A `%` escape that is not two hex digits, or decodes to invalid UTF-8.
    #[error("bad percent-encoding in stdio uri {uri:?}")]
    BadEscape {
        /// The whole string.
        uri: String,
    },
    /// stdin given with a scheme other than a FIFO.
    #[error("stdin {uri:?} must be a fifo path")]
    StdinNotFifo {
        /// The whole string.
        uri: String,
    },
}

/// How a logging binary signals that it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// `binary://`: a byte on fd 5, or closing it, means ready.
    ByteOrEof,
    /// `binary-v2://`: at least one byte must arrive on fd 5 before it is closed.
    Byte,
}

/// A logging binary taken from a `binary://` or `binary-v2://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerCommand {
    /// The absolute path of the binary.
    pub path: PathBuf,
    /// The query pairs in URI order, flattened to `key, value, key, value...`.
    pub args: Vec<String>,
    /// Which ready protocol the binary speaks.
    pub readiness: Readiness,
}

/// Where a process's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// No stdout and no stderr: runc gets `/dev/null`.
    Null,
    /// FIFOs (or plain files) the shim copies into; `None` streams go to `/dev/null`.
    Fifo {
        /// stdout path.
        stdout: Option<PathBuf>,
        /// stderr path.
        stderr: Option<PathBuf>,
    },
    /// A logging binary reading both streams.
    Binary(LoggerCommand),
    /// One file that both streams are appended to.
    File(PathBuf),
}

/// The parsed form of a [`Stdio`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoPlan {
    /// The stdin FIFO, if any.
    pub stdin: Option<PathBuf>,
    /// Where output goes.
    pub output: Output,
    /// Whether a pty is used.
    pub terminal: bool,
}

impl IoPlan {
    /// Parses `stdio`; the scheme comes from stdout.
    pub fn parse(stdio: &Stdio) -> Result<Self, UriError> {
        let stdin = fifo_path(&stdio.stdin)?;
        if stdin.is_none() && stdio.stdout.is_empty() && stdio.stderr.is_empty() {
            return Ok(Self {
                stdin,
                output: Output::Null,
                terminal: stdio.terminal,
            });
        }
        let output = match split_scheme(&stdio.stdout) {
            None | Some(("fifo", _)) => Output::Fifo {
                stdout: fifo_path(&stdio.stdout)?,
                stderr: fifo_path(&stdio.stderr)?,
            },
            Some(("binary", rest)) => {
                Output::Binary(logger(&stdio.stdout, rest, Readiness::ByteOrEof)?)
            }
            Some(("binary-v2", rest)) => {
                Output::Binary(logger(&stdio.stdout, rest, Readiness::Byte)?)
            }
            Some(("file", rest)) => Output::File(absolute_path(&stdio.stdout, rest)?),
            Some((scheme, _)) => {
                return Err(UriError::UnknownScheme {
                    scheme: scheme.to_owned(),
                    uri: stdio.stdout.clone(),
                })
            }
        };
        Ok(Self {
            stdin,
            output,
            terminal: stdio.terminal,
        })
    }
}

/// Splits `scheme://rest` when `s` starts with a syntactically valid scheme.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// A FIFO stream: empty means none, `fifo://path` and a plain path both mean `path`.
fn fifo_path(s: &str) -> Result<Option<PathBuf>, UriError> {
    match split_scheme(s) {
        _ if s.is_empty() => Ok(None),
        None => Ok(Some(PathBuf::from(s))),
        Some(("fifo", rest)) => Ok(Some(PathBuf::from(decode(s, rest, Plus::Literal)?))),
        Some(_) => Err(UriError::StdinNotFifo { uri: s.to_owned() }),
    }
}

fn logger(uri: &str, rest: &str, readiness: Readiness) -> Result<LoggerCommand, UriError> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut args = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(decode(uri, key, Plus::Space)?);
        args.push(decode(uri, value, Plus::Space)?);
    }
    Ok(LoggerCommand {
        path: absolute_path(uri, path)?,
        args,
        readiness,
    })
}

/// The path part of `scheme://rest` (query and fragment removed), which must be absolute.
fn absolute_path(uri: &str, rest: &str) -> Result<PathBuf, UriError> {
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let path = PathBuf::from(decode(uri, &rest[..end], Plus::Literal)?);
    if !Path::new(&path).is_absolute() {
        return Err(UriError::RelativePath {
            uri: uri.to_owned(),
        });
    }
    Ok(path)
}

/// Whether `+` means a space (query strings) or itself (paths).
#[derive(Clone, Copy)]
enum Plus {
    Space,
    Literal,
}

fn decode(uri: &str, s: &str, plus: Plus) -> Result<String, UriError> {
    let bad = || UriError::BadEscape {
        uri: uri.to_owned(),
    };
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match (b, plus) {
            (b'%', _) => {
                let hex = rest
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .ok_or_else(bad)?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                rest = &rest[2..];
            }
            (b'+', Plus::Space) => bytes.push(b' '),
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(stdin: &str, stdout: &str, stderr: &str) -> Stdio {
        Stdio {
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            terminal: false,
        }
    }

    #[test]
    fn empty_is_null() {
        let plan = IoPlan::parse(&stdio("", "", "")).unwrap();
        assert_eq!(plan.output, Output::Null);
        assert_eq!(plan.stdin, None);
    }

    #[test]
    fn plain_paths_and_fifo_scheme_are_fifos() {
        let plan = IoPlan::parse(&stdio("/r/in", "fifo:///r/out", "/r/e:rr")).unwrap();
        assert_eq!(plan.stdin, Some(PathBuf::from("/r/in")));
        let expected = Output::Fifo {
            stdout: Some(PathBuf::from("/r/out")),
            stderr: Some(PathBuf::from("/r/e:rr")),
        };
        assert_eq!(plan.output, expected);
        let only_err = IoPlan::parse(&stdio("", "", "/r/err")).unwrap();
        let expected = Output::Fifo {
            stdout: None,
            stderr: Some(PathBuf::from("/r/err")),
        };
        assert_eq!(only_err.output, expected);
    }

    #[test]
    fn binary_query_becomes_args_in_order() {
        let plan = IoPlan::parse(&stdio("", "binary:///usr/bin/log%20ger?b=2&a=x+y&flag", ""));
        let expected = LoggerCommand {
            path: PathBuf::from("/usr/bin/log ger"),
            args: ["b", "2", "a", "x y", "flag", ""]
                .map(String::from)
                .to_vec(),
            readiness: Readiness::ByteOrEof,
        };
        assert_eq!(plan.unwrap().output, Output::Binary(expected));
        let v2 = IoPlan::parse(&stdio("", "binary-v2:///bin/l", "")).unwrap();
        assert!(matches!(
            v2.output,
            Output::Binary(LoggerCommand {
                readiness: Readiness::Byte,
                ..
            })
        ));
    }

    #[test]
    fn file_scheme_takes_the_path() {
        let plan = IoPlan::parse(&stdio("", "file:///var/log/c.log", "")).unwrap();
        assert_eq!(plan.output, Output::File(PathBuf::from("/var/log/c.log")));
    }

    #[test]
    fn bad_uris_are_typed_errors() {
        let unknown = IoPlan::parse(&stdio("", "http://x/y", "")).unwrap_err();
        assert!(matches!(unknown, UriError::UnknownScheme { ref scheme, .. } if scheme == "http"));
        assert!(unknown.to_string().starts_with("unknown stdio scheme"));
        let relative = IoPlan::parse(&stdio("", "binary://host/bin", "")).unwrap_err();
        assert!(matches!(relative, UriError::RelativePath { .. }));
        let escape = IoPlan::parse(&stdio("", "file:///a%zz", "")).unwrap_err();
        assert!(matches!(escape, UriError::BadEscape { .. }));
        let stdin = IoPlan::parse(&stdio("file:///x", "/o", "")).unwrap_err();
        assert!(matches!(stdin, UriError::StdinNotFifo { .. }));
    }
}
