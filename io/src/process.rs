//! One process's IO, from Create/Exec to Delete.
//!
//! The shim's flow: [`PreparedIo::new`] before `runc create|exec` (opens FIFOs, makes the
//! pipes or the console socket, starts a logger), [`PreparedIo::take_runc_io`] and
//! [`PreparedIo::console_socket`] for runc's command line, then, once runc has returned and
//! the runc-side descriptors are dropped, [`PreparedIo::start`] hands the streams to the
//! engine. The resulting [`ProcessIo`] serves CloseIO, ResizePty, the bounded drain wait on
//! exit, and Delete.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::console::{Console, ConsoleError, ConsoleSocket};
use crate::drain::Drain;
use crate::endpoint::{self, EndpointError};
use crate::engine::{Attachment, Direction, EngineError, EngineHandle, Transfer};
use wren_process::{Spawned, Spawner};

use crate::logger::{self, LoggerEnv, LoggerError};
use crate::pipe::{self, IoOwner, PipeError};
use crate::uri::{IoPlan, Output, Stdio, UriError};

/// How long a logging binary gets to signal ready unless the caller says otherwise.
const DEFAULT_LOGGER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures setting up or using a process's IO.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The stdio strings did not parse.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// A FIFO or log file could not be opened.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// A pipe could not be created or chowned.
    #[error(transparent)]
    Pipe(#[from] PipeError),
    /// The logging binary failed to start.
    #[error(transparent)]
    Logger(#[from] LoggerError),
    /// The console socket or pty failed.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// The copy engine refused the streams.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A second descriptor for a log file or the pty master could not be made.
    #[error("failed to duplicate the {what} descriptor")]
    Duplicate {
        /// Which descriptor.
        what: &'static str,
        /// The dup error.
        #[source]
        source: std::io::Error,
    },
    /// ResizePty on a process without a terminal.
    #[error("process has no console")]
    NoConsole,
}

/// Who a process's IO is for and how it is set up.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// The container id (`CONTAINER_ID` of a logging binary).
    pub container_id: String,
    /// The containerd namespace (`CONTAINER_NAMESPACE` of a logging binary).
    pub namespace: String,
    /// Owner of the container's pipe ends.
    pub owner: IoOwner,
    /// How long a logging binary gets to signal ready.
    pub logger_ready_timeout: Duration,
    /// Where console socket directories are made ([`crate::console::default_dir`] unless
    /// the caller chooses).
    pub console_dir: PathBuf,
}

impl IoConfig {
    /// A config owned by root, with the default logger timeout and console directory.
    pub fn new(container_id: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            namespace: namespace.into(),
            owner: IoOwner::default(),
            logger_ready_timeout: DEFAULT_LOGGER_READY_TIMEOUT,
            console_dir: crate::console::default_dir(),
        }
    }
}

/// The descriptors runc gets as its stdin, stdout and stderr; `None` means `/dev/null`.
/// Drop them once runc has started: until then the container cannot see EOF.
#[derive(Debug, Default)]
pub struct RuncIo {
    /// The read end of the stdin pipe.
    pub stdin: Option<OwnedFd>,
    /// The write end of the stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// The write end of the stderr pipe.
    pub stderr: Option<OwnedFd>,
}

impl RuncIo {
    /// The three as [`std::process::Stdio`], `/dev/null` where absent.
    pub fn into_stdio(self) -> [std::process::Stdio; 3] {
        [self.stdin, self.stdout, self.stderr]
            .map(|fd| fd.map_or_else(std::process::Stdio::null, Into::into))
    }
}

/// One end of a stream before the console exists.
#[derive(Debug)]
enum End {
    Fd(OwnedFd),
    /// The pty master, known only after runc sends it.
    Console,
}

#[derive(Debug)]
struct Route {
    source: End,
    destination: End,
    direction: Direction,
}

/// Where one output stream goes, and whether runc may write there itself.
#[derive(Debug)]
struct Target {
    fd: OwnedFd,
    delivery: Delivery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The shim copies into it (a FIFO or file the container must not hold).
    Copied,
    /// A logger's pipe: runc writes into it directly.
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// A process's IO, set up before runc runs. Dropping it releases everything (and stops a
/// logger at once).
#[derive(Debug, Default)]
pub struct PreparedIo {
    runc: RuncIo,
    /// The shim's own readers on the output FIFOs (see [`ProcessIo::release_output`]).
    output_readers: Vec<OwnedFd>,
    routes: Vec<Route>,
    stdin_writer: Option<OwnedFd>,
    console_socket: Option<ConsoleSocket>,
    logger: Option<Box<dyn Spawned>>,
}

impl PreparedIo {
    /// Opens and creates everything `stdio` asks for. Children (a logging binary) are
    /// started through `spawner`.
    pub fn new(stdio: &Stdio, config: &IoConfig, spawner: &dyn Spawner) -> Result<Self, IoError> {
        let plan = IoPlan::parse(stdio)?;
        let mut io = Self::default();
        if plan.terminal {
            io.console_socket = Some(ConsoleSocket::new_in(&config.console_dir)?);
        }
        if let Some(path) = &plan.stdin {
            io.add_stdin(path, plan.terminal, config.owner)?;
        }
        let targets = io.output_targets(&plan.output, config, spawner)?;
        for (stream, target) in [Stream::Stdout, Stream::Stderr].into_iter().zip(targets) {
            if let Some(target) = target {
                io.add_output(stream, target, plan.terminal, config.owner)?;
            }
        }
        Ok(io)
    }

    /// The path for `runc --console-socket`, when the process has a terminal.
    pub fn console_socket(&self) -> Option<&Path> {
        self.console_socket.as_ref().map(ConsoleSocket::path)
    }

    /// Takes the descriptors to give runc as its stdio.
    pub fn take_runc_io(&mut self) -> RuncIo {
        std::mem::take(&mut self.runc)
    }

    /// Starts copying once runc has returned: receives the pty master (waiting at most
    /// `console_timeout`) and hands every stream to the engine.
    pub fn start(
        mut self,
        engine: &EngineHandle,
        console_timeout: Duration,
    ) -> Result<ProcessIo, IoError> {
        // runc's ends still held here would keep the container from ever seeing EOF.
        self.runc = RuncIo::default();
        let console = match &self.console_socket {
            Some(socket) => Some(socket.receive_master(console_timeout)?),
            None => None,
        };
        let mut transfers = Vec::with_capacity(self.routes.len());
        for route in std::mem::take(&mut self.routes) {
            transfers.push(Transfer {
                source: resolve(route.source, console.as_ref())?,
                destination: resolve(route.destination, console.as_ref())?,
                direction: route.direction,
            });
        }
        let attachment = engine.attach(transfers)?;
        Ok(ProcessIo {
            output_readers: std::mem::take(&mut self.output_readers),
            drain: attachment.drain().clone(),
            attachment: Some(attachment),
            console,
            stdin_writer: self.stdin_writer.take(),
            logger: self.logger.take(),
        })
    }

    fn add_stdin(&mut self, path: &Path, terminal: bool, owner: IoOwner) -> Result<(), IoError> {
        let fifo = endpoint::open_stdin(path)?;
        self.stdin_writer = Some(fifo.writer);
        let destination = if terminal {
            End::Console
        } else {
            let pipe = pipe::process_pipe(Direction::Input, owner)?;
            self.runc.stdin = Some(pipe.runc_end);
            End::Fd(pipe.shim_end)
        };
        self.routes.push(Route {
            source: End::Fd(fifo.reader),
            destination,
            direction: Direction::Input,
        });
        Ok(())
    }

    fn output_targets(
        &mut self,
        output: &Output,
        config: &IoConfig,
        spawner: &dyn Spawner,
    ) -> Result<[Option<Target>; 2], IoError> {
        let copied = |fd| {
            Some(Target {
                fd,
                delivery: Delivery::Copied,
            })
        };
        Ok(match output {
            Output::Null => [None, None],
            Output::Fifo { stdout, stderr } => {
                let mut open = |path: &Option<PathBuf>| -> Result<_, IoError> {
                    let Some(path) = path else {
                        return Ok(None);
                    };
                    let end = endpoint::open_output(path)?;
                    self.output_readers.extend(end.reader);
                    Ok(copied(end.writer))
                };
                [open(stdout)?, open(stderr)?]
            }
            Output::File(path) => {
                let file = endpoint::open_log_file(path)?;
                let second = file.try_clone().map_err(|source| IoError::Duplicate {
                    what: "log file",
                    source,
                })?;
                [copied(file.into()), copied(second.into())]
            }
            Output::Binary(command) => {
                let env = LoggerEnv {
                    container_id: &config.container_id,
                    namespace: &config.namespace,
                };
                let started = logger::start(command, env, spawner, config.logger_ready_timeout)?;
                self.logger = Some(started.child);
                let direct = |fd| {
                    Some(Target {
                        fd,
                        delivery: Delivery::Direct,
                    })
                };
                [direct(started.stdout), direct(started.stderr)]
            }
        })
    }

    fn add_output(
        &mut self,
        stream: Stream,
        target: Target,
        terminal: bool,
        owner: IoOwner,
    ) -> Result<(), IoError> {
        if terminal {
            // A pty merges both streams into the master; stderr has nothing to carry.
            if stream == Stream::Stdout {
                let route = Route {
                    source: End::Console,
                    destination: End::Fd(target.fd),
                    direction: Direction::Output,
                };
                self.routes.push(route);
            }
            return Ok(());
        }
        let runc_end = match target.delivery {
            Delivery::Direct => {
                pipe::chown_pipe(
                    std::os::fd::AsFd::as_fd(&target.fd),
                    Direction::Output,
                    owner,
                )?;
                target.fd
            }
            Delivery::Copied => {
                let pipe = pipe::process_pipe(Direction::Output, owner)?;
                let route = Route {
                    source: End::Fd(pipe.shim_end),
                    destination: End::Fd(target.fd),
                    direction: Direction::Output,
                };
                self.routes.push(route);
                pipe.runc_end
            }
        };
        match stream {
            Stream::Stdout => self.runc.stdout = Some(runc_end),
            Stream::Stderr => self.runc.stderr = Some(runc_end),
        }
        Ok(())
    }
}

impl Drop for PreparedIo {
    fn drop(&mut self) {
        if let Some(mut child) = self.logger.take() {
            logger::stop(child.as_mut(), Duration::ZERO);
        }
    }
}

fn resolve(end: End, console: Option<&Console>) -> Result<OwnedFd, IoError> {
    match (end, console) {
        (End::Fd(fd), _) => Ok(fd),
        (End::Console, Some(console)) => {
            console
                .try_clone_master()
                .map_err(|source| IoError::Duplicate {
                    what: "pty master",
                    source,
                })
        }
        (End::Console, None) => Err(IoError::NoConsole),
    }
}

/// A running process's IO.
#[derive(Debug)]
pub struct ProcessIo {
    attachment: Option<Attachment>,
    output_readers: Vec<OwnedFd>,
    drain: Drain,
    console: Option<Console>,
    stdin_writer: Option<OwnedFd>,
    logger: Option<Box<dyn Spawned>>,
}

impl ProcessIo {
    /// CloseIO: closes the shim's own writer on the stdin FIFO, so the container sees EOF
    /// as soon as the client has closed its writer too.
    pub fn close_stdin(&mut self) {
        self.stdin_writer = None;
    }

    /// ResizePty: `width` columns by `height` rows.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), IoError> {
        let console = self.console.as_ref().ok_or(IoError::NoConsole)?;
        Ok(console.resize(width, height)?)
    }

    /// The process has exited: stops holding its output FIFOs open for reading. What is
    /// left to copy then goes to the client's reader if one is there, and is discarded
    /// (the write fails) if none is, so the drain never waits for a reader that is gone.
    pub fn release_output(&mut self) {
        self.output_readers.clear();
    }

    /// The latch that opens once stdout and stderr have reached the client.
    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// Waits at most `timeout` for the output to drain; returns whether it did. Background
    /// children holding the pipes can keep it from ever draining, hence the bound.
    pub fn wait_drained(&self, timeout: Duration) -> bool {
        self.drain.wait_timeout(timeout)
    }

    /// Delete: stops copying, closes every descriptor, and stops a logger, which first
    /// gets `logger_grace` to finish by itself, then SIGTERM and `logger_grace` more, then
    /// SIGKILL.
    pub fn close(mut self, logger_grace: Duration) {
        self.release(logger_grace);
    }

    fn release(&mut self, logger_grace: Duration) {
        if let Some(attachment) = self.attachment.take() {
            attachment.detach();
        }
        self.stdin_writer = None;
        self.console = None;
        if let Some(mut child) = self.logger.take() {
            logger::stop(child.as_mut(), logger_grace);
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        self.release(Duration::ZERO);
    }
}
