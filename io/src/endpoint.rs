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

/// Opens an output target. A FIFO is opened read-write: the shim's descriptor is then also
/// a reader, so the container's writes neither fail nor raise SIGPIPE while the client is
/// away (a containerd restart), and what it writes meanwhile waits in the FIFO. Anything
/// else (a regular file, `/dev/null`) is opened for appending.
pub(crate) fn open_output(path: &Path) -> Result<OwnedFd, EndpointError> {
    let meta = std::fs::metadata(path).map_err(|source| EndpointError::StatOutput {
        path: path.to_owned(),
        source,
    })?;
    let mut options = OpenOptions::new();
    if meta.file_type().is_fifo() {
        options
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK);
    } else {
        options.append(true);
    }
    let file = options
        .open(path)
        .map_err(|source| EndpointError::OpenOutput {
            path: path.to_owned(),
            source,
        })?;
    Ok(file.into())
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
