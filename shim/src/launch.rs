//! The `start` action: claim the socket, spawn the daemon, tell containerd where it listens.
//!
//! containerd reads `start`'s combined stdout and stderr until EOF (docs/protocol.md §1.3), so the
//! daemon gets `/dev/null` for both and `start` prints only the address. The listener is bound
//! here, before the daemon exists, and handed over as fd 3: the socket accepts connections
//! the moment `start` exits, with no readiness handshake.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use crate::flags::Flags;
use crate::memory;
use crate::runtime::Runtime;
use crate::socket::{claim, socket_address, socket_path, Claim, SocketError, DEFAULT_SOCKET_DIR};
use crate::start_input::{read_spec, StartInput, StartInputError};

/// The fd the daemon finds its listener on, as containerd's Go shims do (`ExtraFiles[0]`).
pub const LISTENER_FD: RawFd = 3;

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
    /// The daemon could not be spawned.
    #[error("failed to spawn the shim daemon")]
    SpawnDaemon(#[source] io::Error),
    /// The runtime options could not be passed to the daemon.
    #[error("failed to pass runtime options to the daemon")]
    PassOptions(#[source] io::Error),
    /// The daemon could not be moved into the shim cgroup.
    #[error("failed to move the daemon into cgroup {cgroup}")]
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
    /// The daemon's oom_score_adj could not be set.
    #[error("failed to adjust the oom score of pid {pid}")]
    OomScore {
        /// The daemon's pid.
        pid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
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

/// Runs `start` and returns the address to print.
///
/// # Errors
/// Any failure; a freshly spawned daemon is killed and its socket removed.
pub fn start<R: Runtime>(flags: &Flags) -> Result<String, StartError> {
    let bundle = std::env::current_dir().map_err(StartError::Cwd)?;
    let mut stdin = Vec::new();
    io::stdin()
        .read_to_end(&mut stdin)
        .map_err(StartError::ReadStdin)?;
    let input = StartInput::decode(&stdin, &flags.namespace, &flags.id)?;
    let group = R::grouping_id(&read_spec(&bundle)?, &flags.id);
    let dir = input.socket_dir().unwrap_or(Path::new(DEFAULT_SOCKET_DIR));
    let path = socket_path(dir, &flags.address, &flags.namespace, &group);
    let address = socket_address(&path);

    if let Claim::Listening(listener) = claim(&path)? {
        let daemon = DaemonLaunch {
            flags,
            bundle: &bundle,
            input: &input,
            stdin: &stdin,
        };
        if let Err(error) = daemon.launch::<R>(listener.into()) {
            // The socket was ours: leave no file that looks like a live shim's.
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
    }
    write_address(&bundle, &address)?;
    Ok(address)
}

/// `<bundle>/address`, written atomically (containerd 1.6/1.7 re-dial it after a restart).
fn write_address(bundle: &Path, address: &str) -> Result<(), StartError> {
    let path = bundle.join("address");
    let temp = bundle.join(".address");
    std::fs::write(&temp, address)
        .and_then(|()| std::fs::rename(&temp, &path))
        .map_err(|source| StartError::WriteAddress { path, source })
}

struct DaemonLaunch<'a> {
    flags: &'a Flags,
    bundle: &'a Path,
    input: &'a StartInput,
    stdin: &'a [u8],
}

impl DaemonLaunch<'_> {
    fn launch<R: Runtime>(&self, listener: OwnedFd) -> Result<(), StartError> {
        let mut child = self.spawn(&listener)?;
        // The daemon holds its own copy now; the parent's must not outlive start.
        drop(listener);
        let placed = self
            .pass_options(&mut child)
            .and_then(|()| self.place::<R>(&child));
        if placed.is_err() {
            // start is single-threaded and runs no reaper: waiting here is safe.
            let _ = child.kill();
            let _ = child.wait();
        }
        placed
    }

    fn spawn(&self, listener: &OwnedFd) -> Result<Child, StartError> {
        let flags = self.flags;
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0(
                std::env::args_os()
                    .next()
                    .unwrap_or_else(|| OsString::from("shim")),
            )
            .args([
                "-namespace",
                &flags.namespace,
                "-id",
                &flags.id,
                "-address",
                &flags.address,
            ])
            .current_dir(self.bundle)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        command.env(memory::TUNABLES_VARIABLE, memory::daemon_tunables());
        if flags.debug || self.input.wants_debug() {
            command.arg("-debug");
        }
        if std::env::var_os("TTRPC_ADDRESS").is_none() {
            if let Some(address) = self.input.ttrpc_address() {
                command.env("TTRPC_ADDRESS", address);
            }
        }
        let listener_fd = listener.as_raw_fd();
        // SAFETY: the closure runs between fork and exec and only calls dup2(2) or fcntl(2),
        // both async-signal-safe; it allocates nothing and touches no lock. `listener_fd`
        // stays open in the parent until spawn returns, so the child's copy is valid.
        unsafe {
            command.pre_exec(move || place_listener(listener_fd));
        }
        command.spawn().map_err(StartError::SpawnDaemon)
    }

    /// Hands the daemon start's stdin (runtime options) through a pipe it reads to EOF.
    fn pass_options(&self, child: &mut Child) -> Result<(), StartError> {
        let Some(mut pipe) = child.stdin.take() else {
            return Ok(());
        };
        pipe.write_all(self.stdin).map_err(StartError::PassOptions)
    }

    fn place<R: Runtime>(&self, child: &Child) -> Result<(), StartError> {
        let options = self.input.runtime_options();
        if let Some(cgroup) = options.and_then(R::shim_cgroup) {
            join_cgroup(Path::new("/sys/fs/cgroup"), &cgroup, child.id())?;
        }
        adjust_oom_score(child.id())
    }
}

/// In the child: put the listener on fd 3 without CLOEXEC, whatever fd it had, and mark
/// every fd above it CLOEXEC, so the long-lived daemon holds nothing that start inherited.
fn place_listener(listener_fd: RawFd) -> io::Result<()> {
    if listener_fd == LISTENER_FD {
        // dup2 onto itself would keep CLOEXEC.
        fcntl(listener_fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    } else {
        nix::unistd::dup2(listener_fd, LISTENER_FD)?;
    }
    let first_stray = libc::c_uint::try_from(LISTENER_FD + 1).unwrap_or(libc::c_uint::MAX);
    let flags = libc::c_int::try_from(libc::CLOSE_RANGE_CLOEXEC).unwrap_or(0);
    // SAFETY: close_range(2) is a plain syscall, async-signal-safe, reading and writing no
    // memory. With CLOSE_RANGE_CLOEXEC it closes nothing now: fds above 3 only close at exec,
    // so std's exec-error pipe keeps working. Kernels before 5.11 answer EINVAL or ENOSYS,
    // which leaves stray fds as they were (containerd passes none).
    let _ = unsafe { libc::close_range(first_stray, libc::c_uint::MAX, flags) };
    Ok(())
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

/// Sets the daemon's `oom_score_adj` to containerd's (start's parent's) plus one, so the OOM
/// killer picks a shim before containerd.
fn adjust_oom_score(pid: u32) -> Result<(), StartError> {
    let oom_error = |source| StartError::OomScore { pid, source };
    let parent = std::os::unix::process::parent_id();
    let text =
        std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj")).map_err(oom_error)?;
    let parent_score: i32 = text
        .trim()
        .parse()
        .map_err(|_| oom_error(io::Error::new(io::ErrorKind::InvalidData, text.clone())))?;
    let score = parent_score.saturating_add(1).min(OOM_SCORE_ADJ_MAX);
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), score.to_string()).map_err(oom_error)
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
