//! Running one runtime command: spawn through the spawner, move its bytes, wait, judge.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{access, AccessFlags};

use crate::error::{Error, Invocation};
use crate::options::Stdio;
use crate::runtime_log::{failure_message, LogCursor};
use crate::sys;
use wren_process::{Exit, Spawned, Spawner};

/// The file execvp(3) would run for `binary`, resolved now so that each spawn execs it
/// directly instead of failing one execve(2) per `PATH` entry before the right one.
///
/// A name with a slash is used as is; a bare name is searched in this process's `PATH`.
/// Anything the search cannot settle now is left to execvp at spawn time, unchanged: a
/// name not found (the spawn error then names it as configured), an unset `PATH` (libc's
/// default applies) and a relative entry (it depends on the working directory then).
pub(crate) fn resolve_program(binary: &Path) -> PathBuf {
    let path = std::env::var_os("PATH");
    search_path(binary, path.as_deref()).unwrap_or_else(|| binary.to_path_buf())
}

fn search_path(binary: &Path, path: Option<&OsStr>) -> Option<PathBuf> {
    let name = binary.as_os_str();
    if name.is_empty() || name.as_bytes().contains(&b'/') {
        return None;
    }
    for dir in std::env::split_paths(path?) {
        if !dir.is_absolute() {
            return None;
        }
        let candidate = dir.join(binary);
        // execvp skips what it cannot execute (EACCES, a directory) and tries the next entry.
        if candidate.is_file() && access(&candidate, AccessFlags::X_OK).is_ok() {
            return Some(candidate);
        }
    }
    None
}

/// Where the runtime's own stdio goes.
#[derive(Debug)]
pub(crate) enum Streams<'a> {
    /// To the container process it starts (`create`, `exec`, `restore`): never read
    /// here, because the container keeps the fds long after the runtime exits.
    Container(Stdio),
    /// Captured: stdout (for JSON) and stderr (for messages), read together so a full
    /// pipe cannot deadlock the runtime; `input` is fed on stdin (else `/dev/null`).
    Captured { input: Option<&'a [u8]> },
}

/// Everything a call needs besides the command line.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub(crate) spawner: &'a dyn Spawner,
    pub(crate) log: Option<&'a Path>,
    pub(crate) invocation: Invocation,
}

impl Call<'_> {
    /// Runs `cmd` to completion and returns its stdout, or [`Error::Failed`] with the
    /// runtime's last error message when it exits unsuccessfully.
    pub(crate) fn run(self, mut cmd: Command, streams: Streams<'_>) -> Result<Vec<u8>, Error> {
        sys::harden_child(&mut cmd);
        // runc reads NOTIFY_SOCKET as a request to relay the container's sd_notify
        // READY=1 to that socket; the shim's own notify socket is not the container's.
        cmd.env_remove("NOTIFY_SOCKET");
        let cursor = self.log.map(LogCursor::mark);
        let (status, output) = match streams {
            Streams::Container(stdio) => {
                stdio.attach(&mut cmd);
                let child = self.spawn(cmd)?;
                (self.wait(child)?, Pumped::default())
            }
            Streams::Captured { input } => self.run_captured(cmd, input)?,
        };
        if !status.success() {
            let message = failure_message(cursor.as_ref(), &output.stderr, &output.stdout);
            return Err(Error::Failed {
                call: self.invocation,
                status,
                message,
            });
        }
        if let Some(source) = output.input_error {
            return Err(Error::WriteInput {
                call: self.invocation,
                source,
            });
        }
        Ok(output.stdout)
    }

    fn run_captured(
        &self,
        mut cmd: Command,
        input: Option<&[u8]>,
    ) -> Result<(Exit, Pumped), Error> {
        let (stdout_r, stdout_w) = self.pipe()?;
        let (stderr_r, stderr_w) = self.pipe()?;
        let feed = match input {
            Some(bytes) => {
                let (stdin_r, stdin_w) = self.pipe()?;
                cmd.stdin(stdin_r);
                Some((File::from(stdin_w), bytes))
            }
            None => {
                cmd.stdin(std::process::Stdio::null());
                None
            }
        };
        cmd.stdout(stdout_w).stderr(stderr_w);
        let child = self.spawn(cmd)?;
        // The pipes close when `pump` returns, even on error, so the runtime cannot
        // block on them while we wait for it below.
        let pumped = pump(feed, File::from(stdout_r), File::from(stderr_r));
        let status = self.wait(child)?;
        let pumped = pumped.map_err(|source| Error::ReadOutput {
            call: self.invocation.clone(),
            source,
        })?;
        Ok((status, pumped))
    }

    /// Spawns and then drops `cmd`, closing the parent's copies of the child's stdio.
    fn spawn(&self, mut cmd: Command) -> Result<Box<dyn Spawned>, Error> {
        self.spawner.spawn(&mut cmd).map_err(|source| Error::Spawn {
            binary: PathBuf::from(cmd.get_program()),
            call: self.invocation.clone(),
            source,
        })
    }

    fn wait(&self, mut child: Box<dyn Spawned>) -> Result<Exit, Error> {
        let pid = child.pid();
        child.wait().map_err(|source| Error::Wait {
            call: self.invocation.clone(),
            pid,
            source,
        })
    }

    fn pipe(&self) -> Result<(OwnedFd, OwnedFd), Error> {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| Error::Pipe {
            call: self.invocation.clone(),
            source: errno.into(),
        })
    }
}

/// What a captured run produced.
#[derive(Debug, Default)]
struct Pumped {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Why stdin could not be fed; only an error if the runtime then succeeded.
    input_error: Option<io::Error>,
}

/// Largest write that cannot block once poll(2) reports a pipe writable.
const ATOMIC_PIPE_WRITE: usize = libc::PIPE_BUF;

/// Slot indices in [`pump`]: stdin, then stdout; stderr is the third.
const INPUT: usize = 0;
const STDOUT: usize = 1;

/// Feeds `feed` to stdin while draining stdout and stderr, until both reach EOF.
fn pump(feed: Option<(File, &[u8])>, stdout: File, stderr: File) -> io::Result<Pumped> {
    let (input, mut pending) = feed.map_or((None, &[][..]), |(file, bytes)| (Some(file), bytes));
    let mut slots = [input, Some(stdout), Some(stderr)];
    let mut out = Pumped::default();
    let mut chunk = [0_u8; 16 * 1024];
    loop {
        let ready = wait_ready(&slots)?;
        if ready.is_empty() {
            return Ok(out);
        }
        for slot in ready {
            if slot == INPUT {
                pending = feed_some(&mut slots[INPUT], pending, &mut out.input_error);
                continue;
            }
            let Some(file) = &mut slots[slot] else {
                continue;
            };
            let sink = if slot == STDOUT {
                &mut out.stdout
            } else {
                &mut out.stderr
            };
            match file.read(&mut chunk) {
                Ok(0) => slots[slot] = None,
                Ok(n) => sink.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Polls the open slots; returns the ready ones (empty once every slot is closed).
fn wait_ready(slots: &[Option<File>; 3]) -> io::Result<Vec<usize>> {
    let open: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_some()).collect();
    let mut fds: Vec<PollFd<'_>> = open
        .iter()
        .filter_map(|&i| {
            let interest = if i == INPUT {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            slots[i]
                .as_ref()
                .map(|file| PollFd::new(file.as_fd(), interest))
        })
        .collect();
    if fds.is_empty() {
        return Ok(Vec::new());
    }
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(open
        .into_iter()
        .zip(
            fds.iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty())),
        )
        .filter(|(_, events)| !events.is_empty())
        .map(|(slot, _)| slot)
        .collect())
}

/// Writes the next atomic chunk of `pending`; closes stdin when done or broken.
fn feed_some<'a>(
    input: &mut Option<File>,
    pending: &'a [u8],
    error: &mut Option<io::Error>,
) -> &'a [u8] {
    let Some(file) = input else { return pending };
    let len = pending.len().min(ATOMIC_PIPE_WRITE);
    match file.write(&pending[..len]) {
        Ok(n) if n < pending.len() => return &pending[n..],
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return pending,
        // EPIPE: the runtime closed stdin; its exit status tells whether that mattered.
        Err(e) => *error = Some(e),
    }
    *input = None;
    &[]
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd};

    use super::*;
    use wren_process::DirectSpawner;

    fn call() -> Call<'static> {
        Call {
            spawner: &DirectSpawner,
            log: None,
            invocation: Invocation::new("test", "c1"),
        }
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn big_input_and_output_on_all_pipes_do_not_deadlock() {
        // Far beyond a 64 KiB pipe buffer on every stream at once.
        let input: Vec<u8> = (0..300_000_u32).map(|i| (i % 251) as u8).collect();
        let script = "head -c 400000 /dev/zero >&2; cat; head -c 500000 /dev/zero >&2";
        let stdout = call()
            .run(
                sh(script),
                Streams::Captured {
                    input: Some(&input),
                },
            )
            .unwrap();
        assert!(stdout == input, "stdout must echo stdin exactly");
    }

    #[test]
    fn a_failing_command_reports_its_status_and_last_stderr_line() {
        let err = call()
            .run(
                sh("echo noise >&2; echo boom >&2; exit 3"),
                Streams::Captured { input: None },
            )
            .unwrap_err();
        let Error::Failed {
            status, message, ..
        } = &err
        else {
            panic!("unexpected {err:?}")
        };
        assert_eq!(status.status, 3);
        assert_eq!(message, "boom");
        assert_eq!(err.to_string(), "test c1 failed with exit code 3: boom");
    }

    /// `dir/name` with `mode`.
    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_bare_name_resolves_to_the_first_executable_file_in_path() {
        let tmp = tempfile::tempdir().unwrap();
        let [missing, not_exec, as_dir, first, second] =
            ["missing", "not-exec", "as-dir", "first", "second"].map(|d| tmp.path().join(d));
        for dir in [&not_exec, &as_dir, &first, &second] {
            std::fs::create_dir(dir).unwrap();
        }
        file(&not_exec, "rt", 0o644);
        std::fs::create_dir(as_dir.join("rt")).unwrap();
        let wanted = file(&first, "rt", 0o755);
        file(&second, "rt", 0o755);
        let path = std::env::join_paths([&missing, &not_exec, &as_dir, &first, &second]).unwrap();
        let rt = Path::new("rt");
        assert_eq!(search_path(rt, Some(&path)), Some(wanted));
        assert_eq!(search_path(Path::new("other"), Some(&path)), None);
        assert_eq!(search_path(rt, None), None, "unset PATH: left to execvp");
        let relative_first = std::env::join_paths([Path::new("bin"), &first]).unwrap();
        assert_eq!(search_path(rt, Some(&relative_first)), None);
        let empty_first = std::env::join_paths([Path::new(""), &first]).unwrap();
        assert_eq!(search_path(rt, Some(&empty_first)), None);
    }

    #[test]
    fn a_path_is_kept_and_an_unknown_name_falls_back_to_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bin");
        std::fs::create_dir(&dir).unwrap();
        file(&dir, "rt", 0o755);
        let path = std::env::join_paths([&dir]).unwrap();
        for explicit in ["./rt", "bin/rt", "/nonexistent/rt"] {
            assert_eq!(search_path(Path::new(explicit), Some(&path)), None);
            assert_eq!(resolve_program(Path::new(explicit)), Path::new(explicit));
        }
        let unknown = Path::new("wren-no-such-runtime");
        assert_eq!(resolve_program(unknown), unknown);
        // The process's own PATH: `sh` is found as an absolute path, as execvp finds it.
        let sh = resolve_program(Path::new("sh"));
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
    }

    #[test]
    fn an_unknown_runtime_name_is_named_as_configured_in_the_spawn_error() {
        let config = crate::RuncConfig {
            binary: PathBuf::from("wren-no-such-runtime"),
            ..crate::RuncConfig::default()
        };
        let runc = crate::Runc::new(config, std::sync::Arc::new(DirectSpawner));
        let err = runc.state("c1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to spawn wren-no-such-runtime for state c1"
        );
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error() {
        let cmd = Command::new("/nonexistent/runc");
        let err = call()
            .run(cmd, Streams::Captured { input: None })
            .unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "unexpected {err:?}");
    }

    #[test]
    fn children_inherit_no_stray_fd_and_no_notify_socket() {
        // dup(2) yields an fd *without* CLOEXEC, as a careless library would create.
        let raw = nix::unistd::dup(std::io::stdin().as_raw_fd()).unwrap();
        // SAFETY: `raw` was just returned by dup(2), is open, and nothing else owns it.
        let stray = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut cmd = sh("ls /proc/$$/fd; echo \"notify=${NOTIFY_SOCKET:-unset}\"");
        cmd.env("NOTIFY_SOCKET", "/run/systemd/notify");
        let stdout = call().run(cmd, Streams::Captured { input: None }).unwrap();
        let stdout = String::from_utf8(stdout).unwrap();
        let fds: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.starts_with("notify="))
            .collect();
        assert_eq!(
            fds,
            ["0", "1", "2"],
            "fd {} leaked? {stdout}",
            stray.as_raw_fd()
        );
        assert!(stdout.contains("notify=unset"), "{stdout}");
    }
}
