//! The long-lived daemon: set up the process, serve until shutdown. containerd's daemon is
//! the process `start` forked ([`crate::launch`]); one started by hand binds `-socket`.
//!
//! The main thread runs one epoll loop over the listener, the client connections, the
//! signal pipes (SIGCHLD reaps here), the shutdown trigger, the threads that ended
//! (joined here, see [`transient`]) and the runtime's own fds ([`crate::loop_sources`]).
//! Everything else runs on threads that exist only while they have work: "rpc" workers for
//! requests and the "publisher" for events. On shutdown it stops accepting, flushes the
//! events and removes the socket.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{getsockname, UnixAddr};

use crate::flags::Flags;
use crate::logger::{StderrLogger, Verbosity};
use crate::loop_sources::{LoopSource, MainLoopSources};
use crate::memory;
use crate::pool::WorkerPool;
use crate::publisher::Publisher;
use crate::runtime::{Runtime, ShimContext, TaskAdapter, TaskService};
use crate::server::Server;
use crate::shutdown::{ShutdownReason, ShutdownTrigger};
use crate::signals::{self, SignalPipes};
use crate::socket::{claim, Claim};
use crate::start_input::StartInput;
use crate::transient;
use wren_process::Monitor;

/// How long shutdown waits for queued events to reach containerd.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for replies (the Shutdown answer, a racing Kill) to reach clients.
const REPLY_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Requests handled at once; more wait in order. containerd rarely has more than a few in
/// flight per shim, since Wait holds no thread.
const MAX_RPC_THREADS: usize = 16;

// Epoll tokens of the main loop's fixed sources; connections take the ones after.
const LISTENER_TOKEN: u64 = 0;
const CHILD_SIGNAL_TOKEN: u64 = 1;
const TERMINATE_SIGNAL_TOKEN: u64 = 2;
const SHUTDOWN_TOKEN: u64 = 3;
const ENDED_THREADS_TOKEN: u64 = 4;
const CONNECTIONS_TOKEN: u64 = 5;
const FIRST_CONNECTION_TOKEN: u64 = 16;
/// The runtime's sources take the tokens from here on, far above any connection's.
const FIRST_SOURCE_TOKEN: u64 = 1 << 62;

/// Errors that keep the daemon from serving.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The signal handlers could not be installed.
    #[error("failed to install the signal handlers")]
    Signals(#[source] io::Error),
    /// The main loop's epoll or shutdown eventfd could not be set up.
    #[error("failed to set up the main loop")]
    MainLoop(#[source] io::Error),
    /// The logger could not be installed.
    #[error(transparent)]
    Logger(#[from] crate::logger::LoggerError),
    /// `PR_SET_CHILD_SUBREAPER` failed.
    #[error("failed to become a child subreaper")]
    Subreaper(#[source] nix::Error),
    /// The working directory (the bundle) is unknown.
    #[error("failed to get the working directory")]
    Cwd(#[source] io::Error),
    /// An fd redirection step failed.
    #[error("failed to redirect {what}")]
    Redirect {
        /// Which descriptor.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A daemon started by hand was given no `-socket`.
    #[error("no -socket given (containerd starts the daemon through `start`)")]
    NoSocket,
    /// The listener `start` forked with is not a unix socket.
    #[error("the listener from start is not a unix socket")]
    NoListener(#[source] nix::Error),
    /// The daemon could not leave containerd's process group.
    #[error("failed to move into a process group of its own")]
    ProcessGroup(#[source] nix::Error),
    /// `-socket` is not a `unix://` path.
    #[error("unsupported -socket address")]
    SocketAddress(#[source] wren_shim_protocol::address::AddressError),
    /// `-socket` could not be bound.
    #[error(transparent)]
    Socket(#[from] crate::socket::SocketError),
    /// `-socket` is already served by a live shim.
    #[error("socket {path} is already served")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The runtime failed to build its service.
    #[error("failed to create runtime {name}")]
    NewRuntime {
        /// The runtime name.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The ttrpc server failed to start.
    #[error("failed to start the ttrpc server")]
    Serve(#[source] io::Error),
}

/// The daemon's listening socket, owned, with the path to remove on exit.
struct Listener {
    fd: OwnedFd,
    path: Option<PathBuf>,
}

/// Runs a daemon started by hand (`-socket`) until it is shut down.
///
/// # Errors
/// Any setup failure; once serving, only shutdown ends it.
pub fn serve<R: Runtime>(flags: &Flags) -> Result<(), DaemonError> {
    redirect_stdio()?;
    let listener = listener(flags)?;
    serve_on::<R>(flags, listener, &StartInput::Empty)
}

/// The daemon `start` forked, with stdio already pointed away from containerd's pipe (the
/// log FIFO for stderr): serves on `listener` with the options `start` decoded, until shut
/// down.
///
/// # Errors
/// Any setup failure (printed on stderr, they reach containerd's log).
pub(crate) fn serve_forked<R: Runtime>(
    flags: &Flags,
    listener: OwnedFd,
    input: &StartInput,
) -> Result<(), DaemonError> {
    // Out of containerd's process group, so that a signal to that group spares the shim
    // (containerd's Go shim does the same).
    let own = nix::unistd::Pid::from_raw(0);
    nix::unistd::setpgid(own, own).map_err(DaemonError::ProcessGroup)?;
    close_inherited_fds(listener.as_fd());
    let listener = Listener::inherited(listener)?;
    serve_on::<R>(flags, listener, input)
}

/// Sets up the process and serves until shut down.
fn serve_on<R: Runtime>(
    flags: &Flags,
    listener: Listener,
    input: &StartInput,
) -> Result<(), DaemonError> {
    // Before any thread exists: it tunes malloc for the whole process.
    memory::tune();
    let ended_threads = transient::install_reaper().map_err(DaemonError::MainLoop)?;
    // Before any child exists, so that no exit can be missed.
    let signals = SignalPipes::install().map_err(DaemonError::Signals)?;
    nix::sys::prctl::set_child_subreaper(true).map_err(DaemonError::Subreaper)?;
    let verbosity = if flags.debug {
        Verbosity::Debug
    } else {
        Verbosity::Info
    };
    StderrLogger::install(verbosity, &flags.namespace, &flags.id)?;

    let monitor = Monitor::new();
    let main_loop = MainLoopSources::new();
    let shutdown = ShutdownTrigger::new().map_err(DaemonError::MainLoop)?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .ok()
        .or_else(|| input.ttrpc_address().map(str::to_owned))
        .unwrap_or_else(|| format!("{}.ttrpc", flags.address));
    let publisher = Publisher::start(&ttrpc_address, &flags.namespace);

    let context = ShimContext {
        namespace: flags.namespace.clone(),
        id: flags.id.clone(),
        bundle: std::env::current_dir().map_err(DaemonError::Cwd)?,
        address: flags.address.clone(),
        ttrpc_address,
        verbosity,
        runtime_options: input.runtime_options().cloned(),
        publisher: publisher.clone(),
        monitor: Arc::clone(&monitor),
        shutdown: shutdown.clone(),
        main_loop: main_loop.clone(),
    };
    let service = Arc::new(R::new(context).map_err(|source| DaemonError::NewRuntime {
        name: R::NAME,
        source: Box::new(source),
    })?);
    let adapter = Arc::new(TaskAdapter::new(Arc::clone(&service), shutdown.clone()));
    let pool = WorkerPool::new("rpc", MAX_RPC_THREADS);
    let server = Server::new(listener.fd, adapter, pool, FIRST_CONNECTION_TOKEN)
        .map_err(DaemonError::Serve)?;
    log::info!("serving {} as {}", R::NAME, flags.id);

    let sources = main_loop.take();
    let reason = run_main_loop(
        server,
        sources,
        &signals,
        &monitor,
        &shutdown,
        ended_threads,
    )?;
    shut_down(
        reason,
        &publisher,
        service.as_ref(),
        listener.path.as_deref(),
    );
    Ok(())
}

/// Serves until the shutdown trigger fires, then sends the replies still queued (bounded);
/// returns why. Dropping the server on return stops accepting and closes every connection;
/// replies in flight then answer no one.
/// `ended_threads` is the [`transient`] reaper's descriptor. The runtime's `sources` are
/// dropped on return, before shutdown: what waits on them then learns they are gone.
fn run_main_loop(
    mut server: Server,
    mut sources: Vec<Box<dyn LoopSource>>,
    signals: &SignalPipes,
    monitor: &Monitor,
    shutdown: &ShutdownTrigger,
    ended_threads: BorrowedFd<'_>,
) -> Result<ShutdownReason, DaemonError> {
    let main_loop_error = |errno: nix::Error| DaemonError::MainLoop(errno.into());
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(main_loop_error)?;
    let readable = |token| EpollEvent::new(EpollFlags::EPOLLIN, token);
    epoll
        .add(server.listener(), readable(LISTENER_TOKEN))
        .and_then(|()| epoll.add(&signals.child, readable(CHILD_SIGNAL_TOKEN)))
        .and_then(|()| epoll.add(&signals.terminate, readable(TERMINATE_SIGNAL_TOKEN)))
        .and_then(|()| epoll.add(shutdown.fd(), readable(SHUTDOWN_TOKEN)))
        .and_then(|()| epoll.add(ended_threads, readable(ENDED_THREADS_TOKEN)))
        .and_then(|()| epoll.add(server.attention(), readable(CONNECTIONS_TOKEN)))
        .map_err(main_loop_error)?;
    for (token, source) in (FIRST_SOURCE_TOKEN..).zip(&sources) {
        epoll
            .add(source.fd(), readable(token))
            .map_err(main_loop_error)?;
    }
    // Children that exited before the handler existed would otherwise wait for the next one.
    monitor.reap();
    let mut events = [EpollEvent::empty(); 32];
    loop {
        let ready = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(ready) => ready,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(main_loop_error(errno)),
        };
        for event in &events[..ready] {
            match event.data() {
                LISTENER_TOKEN => server.accept(&epoll),
                CHILD_SIGNAL_TOKEN => {
                    signals::drain(&signals.child);
                    monitor.reap();
                }
                TERMINATE_SIGNAL_TOKEN => {
                    signals::drain(&signals.terminate);
                    log::info!("received SIGTERM or SIGINT, shutting down");
                    shutdown.trigger(ShutdownReason::Signal);
                }
                SHUTDOWN_TOKEN => {}
                ENDED_THREADS_TOKEN => transient::reap(),
                CONNECTIONS_TOKEN => server.attend(&epoll),
                token if token >= FIRST_SOURCE_TOKEN => {
                    let index = usize::try_from(token - FIRST_SOURCE_TOKEN).ok();
                    if let Some(source) = index.and_then(|index| sources.get_mut(index)) {
                        source.on_readable();
                    }
                }
                token => server.ready(&epoll, token, event.events()),
            }
        }
        if let Some(reason) = shutdown.reason() {
            server.flush(REPLY_FLUSH_TIMEOUT);
            return Ok(reason);
        }
    }
}

/// Flushes queued events (bounded), tells the runtime, removes the socket.
/// Existing connections die with the process.
fn shut_down<S: TaskService>(
    reason: ShutdownReason,
    publisher: &Publisher,
    service: &S,
    socket: Option<&Path>,
) {
    log::info!("shutting down: {reason:?}");
    if !publisher.flush(FLUSH_TIMEOUT) {
        log::error!("events still queued after {FLUSH_TIMEOUT:?}: exiting anyway");
    }
    service.on_shutdown(reason);
    if let Some(path) = socket {
        if let Err(error) = std::fs::remove_file(path) {
            log::warn!("failed to remove socket {}: {error}", path.display());
        }
    }
}

/// fds 0 and 1 to /dev/null; fd 2 to containerd's `log` FIFO (or /dev/null without one).
/// Both are opened before any fd is replaced, so that a failure leaves stdio as it was.
pub(crate) fn redirect_stdio() -> Result<(), DaemonError> {
    let redirect_error = |what| move |source| DaemonError::Redirect { what, source };
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(redirect_error("stdin"))?;
    let log = open_log_fifo(Path::new("log")).map_err(redirect_error("stderr"))?;
    dup_onto(&null, 0).map_err(redirect_error("stdin"))?;
    dup_onto(&null, 1).map_err(redirect_error("stdout"))?;
    dup_onto(log.as_ref().unwrap_or(&null), 2).map_err(redirect_error("stderr"))?;
    Ok(())
}

fn dup_onto(file: &File, target: i32) -> io::Result<()> {
    nix::unistd::dup2(file.as_fd().as_raw_fd(), target)?;
    Ok(())
}

/// Opens the `log` FIFO for writing if containerd holds its read end.
///
/// Non-blocking open so that a FIFO without a reader (ENXIO) cannot hang the daemon; the fd
/// is then made blocking so that log lines are never dropped on a full pipe.
fn open_log_fifo(path: &Path) -> io::Result<Option<File>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => {}
        Ok(_) => return Ok(None),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    }
    let file = match File::options()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(error) => return Err(error),
    };
    let flags = fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?;
    let blocking = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(blocking))?;
    Ok(Some(file))
}

/// The listener of a daemon started by hand: `-socket`, claimed here.
fn listener(flags: &Flags) -> Result<Listener, DaemonError> {
    let address = flags.socket.as_ref().ok_or(DaemonError::NoSocket)?;
    let path =
        wren_shim_protocol::address::socket_path(address).map_err(DaemonError::SocketAddress)?;
    match claim(&path)? {
        Claim::Listening(listener) => Ok(Listener {
            fd: UnixListener::into(listener),
            path: Some(path),
        }),
        Claim::AlreadyServed => Err(DaemonError::SocketInUse { path }),
    }
}

impl Listener {
    /// The listener `start` bound and forked with; its path is removed at shutdown.
    fn inherited(fd: OwnedFd) -> Result<Self, DaemonError> {
        let address: UnixAddr = getsockname(fd.as_raw_fd()).map_err(DaemonError::NoListener)?;
        Ok(Self {
            path: address.path().map(Path::to_owned),
            fd,
        })
    }
}

/// Closes every fd above stderr but the listener: whatever containerd (or a test harness)
/// let `start` inherit must not stay open in a daemon that lives as long as its containers.
/// Nothing else in the process owns an fd at this point.
fn close_inherited_fds(listener: BorrowedFd<'_>) {
    let listener = libc::c_uint::try_from(listener.as_raw_fd()).unwrap_or(libc::c_uint::MAX);
    let first = libc::c_uint::try_from(libc::STDERR_FILENO + 1).unwrap_or(libc::c_uint::MAX);
    for (low, high) in [
        (first, listener.saturating_sub(1)),
        (listener.saturating_add(1), libc::c_uint::MAX),
    ] {
        if low <= high {
            // SAFETY: close_range(2) reads and writes no memory, and closes only fds no object
            // in the process owns (see above). Kernels before 5.9 answer ENOSYS and keep them.
            let _ = unsafe { libc::syscall(libc::SYS_close_range, low, high, 0) };
        }
    }
}
