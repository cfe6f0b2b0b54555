//! The `start` action: claim the socket, fork the daemon, tell containerd where it listens.
//!
//! containerd reads `start`'s combined stdout and stderr until EOF (docs/protocol.md §1.3), so
//! `start` points both where the daemon keeps them before it forks, with one copy of the pipe
//! kept aside: the daemon closes that copy first thing, and `start` prints the address on it
//! and exits while the daemon sets itself up on the other CPU. The listener is bound here,
//! before the daemon exists: the socket accepts connections the moment `start` exits, with
//! no readiness handshake.
//!
//! The daemon is `start` forked, not a second exec of the binary: it goes straight on to serve
//! with the listener and the options `start` already holds, which saves the exec, the libc's
//! start-up and the hand-over through fds and pipes (0.85x to the first answer, benches/).
//! Nothing the daemon needs comes only from an exec: it gets its own process group, the
//! environment containerd gave, /dev/null and the log FIFO for stdio, every other inherited
//! fd closed, and `start` holds no thread and little heap at the fork. (glibc's
//! allocator tunables do come only from an exec; release builds link musl, which needs none,
//! see `shim/src/memory.rs`.)

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use crate::daemon;
use crate::flags::Flags;
use crate::runtime::Runtime;
use crate::socket::{claim, socket_address, socket_path, Claim, SocketError, DEFAULT_SOCKET_DIR};
use crate::start_input::{read_annotations, StartInput, StartInputError};

/// The highest `oom_score_adj`.
const OOM_SCORE_ADJ_MAX: i32 = 1000;

/// Errors from the `start` action.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The working directory (the bundle) is unknown.
    #[error("failed to get the working directory")]
    Cwd(#[source] io::Error),
    /// stdin could not be read.
    #[error("failed to read stdin")]
    ReadStdin(#[source] io::Error),
    /// stdin or the bundle could not be decoded.
    #[error(transparent)]
    Input(#[from] StartInputError),
    /// The socket could not be claimed.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The daemon could not be forked.
    #[error("failed to fork the shim daemon")]
    ForkDaemon(#[source] nix::Error),
    /// The forked daemon could not serve.
    #[error("the shim daemon failed")]
    Serve(#[source] daemon::DaemonError),
    /// `start` (and so the daemon) could not join the shim cgroup.
    #[error("failed to join cgroup {cgroup}")]
    JoinCgroup {
        /// The cgroup path.
        cgroup: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The shim cgroup exists in no mounted hierarchy.
    #[error("cgroup {cgroup} exists in no mounted hierarchy")]
    NoSuchCgroup {
        /// The cgroup path.
        cgroup: String,
    },
    /// `start`'s (and so the daemon's) oom_score_adj could not be set.
    #[error("failed to adjust the oom score")]
    OomScore(#[source] io::Error),
    /// The address could not be printed.
    #[error("failed to print the address")]
    PrintAddress(#[source] io::Error),
    /// containerd's pipe could not be kept aside for the address.
    #[error("failed to duplicate stdout")]
    KeepOutput(#[source] io::Error),
    /// stdio could not be pointed where the daemon keeps it.
    #[error("failed to hand stdio over to the daemon")]
    HandOverStdio(#[source] daemon::DaemonError),
    /// `<bundle>/address` could not be written.
    #[error("failed to write {path}")]
    WriteAddress {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Runs `start`: returns once the address is printed, or, in the forked daemon, once it has
/// served and stopped.
///
/// # Errors
/// Any failure of `start` (once stdio is handed over, printed on containerd's log FIFO), with
/// the socket this call bound removed and the daemon, if forked, killed; in the daemon, a
/// setup failure.
pub fn start<R: Runtime>(flags: &Flags) -> Result<(), StartError> {
    let bundle = std::env::current_dir().map_err(StartError::Cwd)?;
    // Decoded and dropped: the forked daemon keeps start's stack for its whole life.
    let input = StartInput::decode(
        &read_stdin().map_err(StartError::ReadStdin)?,
        &flags.namespace,
        &flags.id,
    )?;
    let group = R::grouping_id(&read_annotations(&bundle)?, &flags.id);
    let dir = input.socket_dir().unwrap_or(Path::new(DEFAULT_SOCKET_DIR));
    let path = socket_path(dir, &flags.address, &flags.namespace, &group);
    let address = socket_address(&path);

    let Claim::Listening(listener) = claim(&path)? else {
        write_address(&bundle, &address)?;
        return print_address(stdout(), &address);
    };
    // Everything the daemon inherits is settled before the fork, its stdio too; the address
    // is printed after it, while the daemon already sets itself up.
    let shim_cgroup = input.runtime_options().and_then(R::shim_cgroup);
    let forked = place_self(shim_cgroup.as_deref())
        .and_then(|()| write_address(&bundle, &address))
        .and_then(|()| hand_over_stdio())
        .and_then(|output| fork_daemon::<R>(flags, &input, listener.into(), output));
    let printed = match forked {
        Ok(Forked::Parent { daemon, output }) => {
            let printed = print_address(&output, &address);
            if printed.is_err() {
                // containerd will not learn where it listens: it must not live on.
                let _ = kill(daemon, Signal::SIGKILL);
                let _ = waitpid(daemon, None);
            }
            printed
        }
        Ok(Forked::Daemon(served)) => return served.map_err(StartError::Serve),
        Err(error) => Err(error),
    };
    if printed.is_err() {
        // The socket was ours: leave no file that looks like a live shim's.
        let _ = std::fs::remove_file(&path);
    }
    printed
}

/// Which side of the fork [`fork_daemon`] returned in.
enum Forked {
    /// `start`, with the daemon's pid and containerd's pipe.
    Parent { daemon: Pid, output: OwnedFd },
    /// The daemon, after serving.
    Daemon(Result<(), daemon::DaemonError>),
}

/// All of stdin (the runtime options), through a duplicate of fd 0: std's own stdin would
/// keep an 8 KiB buffer for the life of the process, the daemon's too.
fn read_stdin() -> io::Result<Vec<u8>> {
    let fd = nix::unistd::dup(libc::STDIN_FILENO)?;
    // SAFETY: dup just returned this descriptor; nothing else owns it.
    let mut stdin = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut bytes = Vec::new();
    stdin.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Points stdio where the daemon keeps it (/dev/null, the log FIFO) and returns containerd's
/// pipe, kept close-on-exec to print the address on.
fn hand_over_stdio() -> Result<OwnedFd, StartError> {
    let output = stdout()
        .try_clone_to_owned()
        .map_err(StartError::KeepOutput)?;
    daemon::redirect_stdio().map_err(StartError::HandOverStdio)?;
    Ok(output)
}

/// fd 1, borrowed without std's `Stdout`, whose first use allocates a buffer that the forked
/// daemon would keep for its whole life.
fn stdout() -> BorrowedFd<'static> {
    // SAFETY: fd 1 stays open while the process runs: `start` only ever dup2s over it.
    unsafe { BorrowedFd::borrow_raw(libc::STDOUT_FILENO) }
}

/// Writes the address on `output` (stdout, or containerd's pipe kept by [`hand_over_stdio`]),
/// unbuffered.
fn print_address(output: impl AsFd, address: &str) -> Result<(), StartError> {
    let mut rest = address.as_bytes();
    while !rest.is_empty() {
        match nix::unistd::write(&output, rest) {
            Ok(written) => rest = &rest[written..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(StartError::PrintAddress(errno.into())),
        }
    }
    Ok(())
}

/// `<bundle>/address`, written atomically (containerd 1.6/1.7 re-dial it after a restart).
fn write_address(bundle: &Path, address: &str) -> Result<(), StartError> {
    let path = bundle.join("address");
    let temp = bundle.join(".address");
    std::fs::write(&temp, address)
        .and_then(|()| std::fs::rename(&temp, &path))
        .map_err(|source| StartError::WriteAddress { path, source })
}

/// Forks the daemon; in the child it serves until shut down before returning. The child
/// closes `output` (containerd's pipe) before anything else, so that containerd sees EOF
/// once `start` has printed and exited, without waiting for the daemon's set-up.
fn fork_daemon<R: Runtime>(
    flags: &Flags,
    input: &StartInput,
    listener: OwnedFd,
    output: OwnedFd,
) -> Result<Forked, StartError> {
    let mut daemon_flags = flags.clone();
    daemon_flags.debug |= input.wants_debug();
    // SAFETY: start runs no thread besides this one, so the child is a whole copy of the
    // process: no lock in it is held by a thread the fork left behind, and it may go on
    // running the same program (allocating, logging, starting threads) as the daemon.
    match unsafe { fork() }.map_err(StartError::ForkDaemon)? {
        ForkResult::Child => {
            drop(output);
            Ok(Forked::Daemon(daemon::serve_forked::<R>(
                &daemon_flags,
                listener,
                input,
            )))
        }
        // The daemon holds its own copy of the listener now; this one closes on return.
        ForkResult::Parent { child } => Ok(Forked::Parent {
            daemon: child,
            output,
        }),
    }
}

/// Moves `start` into the shim cgroup, if the options name one, and sets its OOM score: the
/// daemon it forks next inherits both, as containerd's own shim sets them on its daemon.
fn place_self(shim_cgroup: Option<&str>) -> Result<(), StartError> {
    if let Some(cgroup) = shim_cgroup {
        join_cgroup(Path::new("/sys/fs/cgroup"), cgroup, std::process::id())?;
    }
    adjust_oom_score()
}

/// Writes `pid` into `cgroup` in every hierarchy under `root` that has it (v1), or into the
/// unified hierarchy (v2).
fn join_cgroup(root: &Path, cgroup: &str, pid: u32) -> Result<(), StartError> {
    let relative = cgroup.trim_start_matches('/');
    let join_error = |source| StartError::JoinCgroup {
        cgroup: cgroup.to_owned(),
        source,
    };
    let hierarchies: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.to_owned()]
    } else {
        std::fs::read_dir(root)
            .map_err(join_error)?
            .filter_map(Result::ok)
            // `cpu` and `cpuacct` are symlinks to `cpu,cpuacct`: join each hierarchy once.
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .map(|entry| entry.path())
            .collect()
    };
    let mut joined = 0;
    for hierarchy in hierarchies {
        let procs = hierarchy.join(relative).join("cgroup.procs");
        if procs.exists() {
            std::fs::write(&procs, pid.to_string()).map_err(join_error)?;
            joined += 1;
        }
    }
    if joined == 0 {
        return Err(StartError::NoSuchCgroup {
            cgroup: cgroup.to_owned(),
        });
    }
    Ok(())
}

/// Sets `start`'s (and so the daemon's) `oom_score_adj` to containerd's (start's parent's)
/// plus one, so the OOM killer picks a shim before containerd.
fn adjust_oom_score() -> Result<(), StartError> {
    let oom_error = StartError::OomScore;
    let parent = std::os::unix::process::parent_id();
    let text =
        std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj")).map_err(oom_error)?;
    let parent_score: i32 = text
        .trim()
        .parse()
        .map_err(|_| oom_error(io::Error::new(io::ErrorKind::InvalidData, text.clone())))?;
    let score = parent_score.saturating_add(1).min(OOM_SCORE_ADJ_MAX);
    std::fs::write("/proc/self/oom_score_adj", score.to_string()).map_err(oom_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_cgroup_v1_writes_every_hierarchy_that_has_the_path() {
        let root = tempfile::tempdir().unwrap();
        for hierarchy in ["memory", "pids", "cpu,cpuacct"] {
            std::fs::create_dir_all(root.path().join(hierarchy).join("shim")).unwrap();
            std::fs::write(root.path().join(hierarchy).join("shim/cgroup.procs"), "").unwrap();
        }
        std::fs::create_dir(root.path().join("devices")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpu")).unwrap();
        join_cgroup(root.path(), "/shim", 42).unwrap();
        for hierarchy in ["memory", "pids", "cpu,cpuacct"] {
            let procs = root.path().join(hierarchy).join("shim/cgroup.procs");
            assert_eq!(std::fs::read_to_string(procs).unwrap(), "42");
        }
        assert!(matches!(
            join_cgroup(root.path(), "/absent", 42),
            Err(StartError::NoSuchCgroup { .. })
        ));
    }

    #[test]
    fn join_cgroup_v2_uses_the_unified_path() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "memory pids").unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/cgroup.procs"), "").unwrap();
        join_cgroup(root.path(), "a/b", 7).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("a/b/cgroup.procs")).unwrap(),
            "7"
        );
    }
}
