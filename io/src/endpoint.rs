//! Opening the client's ends: stdio FIFOs and log files, never with a call that can hang.
//!
//! A blocking `open(O_WRONLY)` on a FIFO waits for a reader forever; Linux never blocks
//! `O_RDWR` or `O_NONBLOCK` opens, so those are the only ones used here.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Failures opening a client endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The output path could not be inspected.
    #[error("failed to stat output {path}")]
    StatOutput {
        /// The path.
        path: PathBuf,
        /// The stat error.
        #[source]
        source: io::Error,
    },
    /// The output FIFO or file could not be opened.
    #[error("failed to open output {path}")]
    OpenOutput {
        /// The path.
        path: PathBuf,
        /// The open error.
        #[source]
        source: io::Error,
    },
    /// The stdin path exists but is not a FIFO.
    #[error("stdin {path} is not a fifo")]
    StdinNotFifo {
        /// The path.
        path: PathBuf,
    },
    /// The stdin FIFO could not be opened for reading.
    #[error("failed to open stdin fifo {path} for reading")]
    OpenStdinReader {
        /// The path.
        path: PathBuf,
        /// The open error.
        #[source]
        source: io::Error,
    },
    /// The shim's own writer on the stdin FIFO could not be opened.
    #[error("failed to open stdin fifo {path} for writing")]
    OpenStdinWriter {
        /// The path.
        path: PathBuf,
        /// The open error.
        #[source]
        source: io::Error,
    },
    /// The parent directory of a `file://` log could not be created.
    #[error("failed to create log directory {path}")]
    CreateLogDir {
        /// The directory.
        path: PathBuf,
        /// The mkdir error.
        #[source]
        source: io::Error,
    },
    /// A `file://` log could not be opened.
    #[error("failed to open log file {path}")]
    OpenLogFile {
        /// The path.
        path: PathBuf,
        /// The open error.
        #[source]
        source: io::Error,
    },
}

/// An output target as the shim holds it.
#[derive(Debug)]
pub(crate) struct OutputEnd {
    /// Where the output is written.
    pub(crate) writer: OwnedFd,
    /// For a FIFO, the shim's own reader, held while the process runs: the container's
    /// writes then neither fail nor raise SIGPIPE while the client is away (a containerd
    /// restart), and what it writes meanwhile waits in the FIFO. Once the process has
    /// exited it is dropped, so that output nobody reads fails (and is discarded) instead
    /// of being waited for.
    pub(crate) reader: Option<OwnedFd>,
}

/// Opens an output target: a FIFO as a reader first (non-blocking, so it returns at once)
/// then a writer (which the reader lets open at once); anything else (a regular file,
/// `/dev/null`) for appending.
pub(crate) fn open_output(path: &Path) -> Result<OutputEnd, EndpointError> {
    let meta = std::fs::metadata(path).map_err(|source| EndpointError::StatOutput {
        path: path.to_owned(),
        source,
    })?;
    let open = |options: &mut OpenOptions| {
        options
            .open(path)
            .map(OwnedFd::from)
            .map_err(|source| EndpointError::OpenOutput {
                path: path.to_owned(),
                source,
            })
    };
    if !meta.file_type().is_fifo() {
        let writer = open(OpenOptions::new().append(true))?;
        return Ok(OutputEnd {
            writer,
            reader: None,
        });
    }
    let reader = open(OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK))?;
    let writer = open(
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK),
    )?;
    Ok(OutputEnd {
        writer,
        reader: Some(reader),
    })
}

/// The stdin FIFO's two shim-held ends.
#[derive(Debug)]
pub(crate) struct StdinFifo {
    /// Non-blocking reader the engine copies from.
    pub(crate) reader: OwnedFd,
    /// Writer that keeps the reader from seeing EOF while the client detaches and
    /// reattaches; closing it (CloseIO) lets the client's close become the container's EOF.
    pub(crate) writer: OwnedFd,
}

/// Opens the stdin FIFO: first the reader (non-blocking, so it returns at once), then the
/// writer (non-blocking, which succeeds because the reader now exists).
pub(crate) fn open_stdin(path: &Path) -> Result<StdinFifo, EndpointError> {
    let is_fifo = std::fs::metadata(path).map(|m| m.file_type().is_fifo());
    if matches!(is_fifo, Ok(false)) {
        return Err(EndpointError::StdinNotFifo {
            path: path.to_owned(),
        });
    }
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| EndpointError::OpenStdinReader {
            path: path.to_owned(),
            source,
        })?;
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| EndpointError::OpenStdinWriter {
            path: path.to_owned(),
            source,
        })?;
    Ok(StdinFifo {
        reader: reader.into(),
        writer: writer.into(),
    })
}

/// Opens (creating it and its parents) the `file://` log for appending, mode 0644.
pub(crate) fn open_log_file(path: &Path) -> Result<File, EndpointError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| EndpointError::CreateLogDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|source| EndpointError::OpenLogFile {
            path: path.to_owned(),
            source,
        })
}
