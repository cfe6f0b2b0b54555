//! Client-side stdio: FIFOs made and opened like containerd's client, and pumps
//! that move bytes between them and the caller.
//!
//! Layout (docs/protocol.md §4.2): a private `mkdtemp` directory (0700) holding
//! `<id>-stdin`, `<id>-stdout` and `<id>-stderr`. stdout/stderr are opened
//! `O_RDONLY|O_NONBLOCK` and stdin write-only before `Create`, so the shim's
//! own opens never wait for us. With a terminal there is no stderr FIFO.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::fifo;

/// Whether the process gets a stdin stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinMode {
    /// No stdin FIFO: the process reads from nothing.
    Closed,
    /// A stdin FIFO the caller feeds.
    Piped,
}

/// Whether the process runs on a pseudo-terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// Plain pipes: stdout and stderr stay apart.
    Off,
    /// A pty: one output stream, no stderr FIFO.
    On,
}

impl Terminal {
    /// The wire flag.
    pub fn enabled(self) -> bool {
        self == Self::On
    }
}

/// Errors from making, opening and pumping FIFOs.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// `mkdtemp` of the FIFO directory failed.
    #[error("failed to create fifo directory under {base}")]
    TempDir {
        /// The parent directory.
        base: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// `mkfifo` failed.
    #[error("failed to create fifo {path}")]
    Create {
        /// The FIFO.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Opening a FIFO failed.
    #[error("failed to open fifo {path}")]
    Open {
        /// The FIFO.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Spawning a pump thread failed.
    #[error("failed to spawn the {stream} pump thread")]
    Spawn {
        /// Which stream.
        stream: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A directory of stdio FIFOs for one process; removed on drop.
#[derive(Debug)]
pub struct FifoSet {
    dir: PathBuf,
    /// The stdin FIFO, if the process has stdin.
    pub stdin: Option<PathBuf>,
    /// The stdout FIFO (the pty's output with a terminal).
    pub stdout: PathBuf,
    /// The stderr FIFO; none with a terminal.
    pub stderr: Option<PathBuf>,
}

impl FifoSet {
    /// Makes a fresh 0700 directory under `base` (created if missing) and the FIFOs for `id`.
    pub fn create(
        base: &Path,
        id: &str,
        stdin: StdinMode,
        terminal: Terminal,
    ) -> Result<Self, StdioError> {
        std::fs::create_dir_all(base).map_err(|source| StdioError::Create {
            path: base.to_path_buf(),
            source,
        })?;
        let dir = nix::unistd::mkdtemp(&base.join("fifo-XXXXXX")).map_err(|source| {
            StdioError::TempDir {
                base: base.to_path_buf(),
                source,
            }
        })?;
        let mut set = Self {
            stdout: dir.join(format!("{id}-stdout")),
            dir,
            stdin: None,
            stderr: None,
        };
        if stdin == StdinMode::Piped {
            set.stdin = Some(set.dir.join(format!("{id}-stdin")));
        }
        if terminal == Terminal::Off {
            set.stderr = Some(set.dir.join(format!("{id}-stderr")));
        }
        for path in set.paths() {
            fifo::make(path).map_err(|source| StdioError::Create {
                path: path.clone(),
                source,
            })?;
        }
        Ok(set)
    }

    /// The directory holding the FIFOs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.stdin
            .iter()
            .chain(std::iter::once(&self.stdout))
            .chain(self.stderr.iter())
    }

    /// Opens our ends; call before `Create`/`Exec` so the shim's opens find a peer.
    pub fn open(&self) -> Result<OpenFifos, StdioError> {
        let open_reader = |path: &PathBuf| {
            fifo::open_reader_nonblocking(path).map_err(|source| StdioError::Open {
                path: path.clone(),
                source,
            })
        };
        let stdin = match &self.stdin {
            Some(path) => Some(fifo::open_writer(path).map_err(|source| StdioError::Open {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let stderr = match &self.stderr {
            Some(path) => Some(open_reader(path)?),
            None => None,
        };
        Ok(OpenFifos {
            stdin,
            stdout: open_reader(&self.stdout)?,
            stderr,
        })
    }
}

impl Drop for FifoSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the process's stdin comes from.
#[derive(Debug)]
pub enum Input {
    /// This process's own stdin.
    Inherit,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// This file's contents.
    File(File),
}

/// Where an output stream goes.
#[derive(Debug)]
pub enum Output {
    /// This process's own stdout (for stdout) or stderr (for stderr).
    Inherit,
    /// Kept in memory and returned by [`Pump::wait`].
    Capture,
    /// Written to this file.
    File(File),
    /// Read and dropped.
    Discard,
}

/// Our open ends of a [`FifoSet`].
#[derive(Debug)]
pub struct OpenFifos {
    stdin: Option<File>,
    stdout: File,
    stderr: Option<File>,
}

/// Bytes captured from [`Output::Capture`] streams.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

/// Running pump threads; outputs are joined by [`Pump::wait`].
#[derive(Debug)]
pub struct Pump {
    stdout: JoinHandle<Vec<u8>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl OpenFifos {
    /// Starts the pumps. `on_stdin_eof` runs once the input is exhausted and our write end
    /// is closed; pass a `CloseIO` call there, because the shim holds its own writer.
    pub fn pump(
        self,
        input: Input,
        stdout: Output,
        stderr: Output,
        on_stdin_eof: impl FnOnce() + Send + 'static,
    ) -> Result<Pump, StdioError> {
        if let Some(writer) = self.stdin {
            spawn("stdin", move || {
                feed(input, writer);
                on_stdin_eof();
            })?;
        }
        let stdout = spawn("stdout", move || {
            copy_out(&self.stdout, stdout, StreamKind::Stdout)
        })?;
        let stderr = match self.stderr {
            Some(fifo) => Some(spawn("stderr", move || {
                copy_out(&fifo, stderr, StreamKind::Stderr)
            })?),
            None => None,
        };
        Ok(Pump { stdout, stderr })
    }
}

impl Pump {
    /// Waits until the shim closed the output FIFOs (the process and its IO are done).
    pub fn wait(self) -> Captured {
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = self
            .stderr
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        Captured { stdout, stderr }
    }
}

fn spawn<T: Send + 'static>(
    stream: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, StdioError> {
    std::thread::Builder::new()
        .name(format!("pump-{stream}"))
        .spawn(work)
        .map_err(|source| StdioError::Spawn { stream, source })
}

/// Copies the input into the stdin FIFO; dropping `writer` gives the shim its EOF.
fn feed(input: Input, mut writer: File) {
    // A write error means the reader (the shim) is gone: nothing more to deliver.
    let _ = match input {
        Input::Bytes(bytes) => writer.write_all(&bytes),
        Input::File(mut file) => io::copy(&mut file, &mut writer).map(drop),
        Input::Inherit => io::copy(&mut io::stdin().lock(), &mut writer).map(drop),
    };
}

#[derive(Clone, Copy)]
enum StreamKind {
    Stdout,
    Stderr,
}

/// Copies a non-blocking FIFO to `output` until every writer has gone.
///
/// poll(2) on a FIFO reader reports nothing until a writer has opened it, and POLLHUP once
/// the last writer closed, so this neither spins before the shim opens its end nor stops early.
fn copy_out(fifo: &File, output: Output, kind: StreamKind) -> Vec<u8> {
    let mut captured = Vec::new();
    let mut sink: Box<dyn Write + '_> = match (output, kind) {
        (Output::Inherit, StreamKind::Stdout) => Box::new(io::stdout()),
        (Output::Inherit, StreamKind::Stderr) => Box::new(io::stderr()),
        (Output::File(file), _) => Box::new(file),
        (Output::Capture, _) => Box::new(&mut captured),
        (Output::Discard, _) => Box::new(io::sink()),
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => break,
        }
        match (&*fifo).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if sink
                    .write_all(&buf[..n])
                    .and_then(|()| sink.flush())
                    .is_err()
                {
                    // Keep draining so the container never blocks on a full pipe.
                    sink = Box::new(io::sink());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    drop(sink);
    captured
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn layout_follows_containerd_client() {
        let base = tempfile::tempdir().unwrap();
        let set = FifoSet::create(base.path(), "c1", StdinMode::Piped, Terminal::Off).unwrap();
        assert_eq!(set.stdin.as_ref().unwrap().file_name().unwrap(), "c1-stdin");
        assert_eq!(set.stdout.file_name().unwrap(), "c1-stdout");
        assert_eq!(
            set.stderr.as_ref().unwrap().file_name().unwrap(),
            "c1-stderr"
        );
        let mode = std::fs::metadata(set.dir()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o700
        );
        let tty = FifoSet::create(base.path(), "c2", StdinMode::Closed, Terminal::On).unwrap();
        assert!(tty.stdin.is_none() && tty.stderr.is_none());
        let dir = set.dir().to_path_buf();
        drop(set);
        assert!(!dir.exists());
    }

    /// Plays the shim's side: reads stdin to EOF, echoes it to stdout, writes stderr.
    #[test]
    fn pumps_move_bytes_both_ways_and_report_stdin_eof() {
        let base = tempfile::tempdir().unwrap();
        let set = FifoSet::create(base.path(), "p", StdinMode::Piped, Terminal::Off).unwrap();
        let ours = set.open().unwrap();
        let mut shim_in = fifo::open_reader_nonblocking(set.stdin.as_ref().unwrap()).unwrap();
        fifo::set_blocking(&shim_in).unwrap();
        let mut shim_out = OpenOptions::new().write(true).open(&set.stdout).unwrap();
        let mut shim_err = OpenOptions::new()
            .write(true)
            .open(set.stderr.as_ref().unwrap())
            .unwrap();
        let (eof_tx, eof_rx) = mpsc::channel();
        let pump = ours
            .pump(
                Input::Bytes(b"ping".to_vec()),
                Output::Capture,
                Output::Capture,
                move || {
                    eof_tx.send(()).unwrap();
                },
            )
            .unwrap();
        let mut got = Vec::new();
        shim_in.read_to_end(&mut got).unwrap();
        eof_rx.recv().unwrap();
        shim_out.write_all(&got).unwrap();
        shim_err.write_all(b"oops").unwrap();
        drop((shim_out, shim_err));
        let captured = pump.wait();
        assert_eq!(captured.stdout, b"ping");
        assert_eq!(captured.stderr, b"oops");
    }
}
