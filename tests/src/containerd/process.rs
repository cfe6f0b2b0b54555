//! Child processes with a deadline, stopping daemons, and what `/proc` says about other
//! processes.

use std::io::{self, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `cmd` with stdout and stderr captured; kills it and panics if it outlives `deadline`.
///
/// The output is drained by two threads while this one polls `try_wait`, so a child that
/// writes a lot cannot block on a full pipe, and a hung child is killed through its
/// still-unreaped `Child` (never by a PID that might have been reused).
pub fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Output {
    let child = spawn_captured(cmd);
    finish(cmd, child, deadline)
}

/// Like [`run_with_deadline`], with `input` written to the child's stdin; `before_eof` runs
/// once it is all written, and stdin is closed only after it returns.
pub fn run_with_input(
    cmd: &mut Command,
    input: &[u8],
    before_eof: impl FnOnce(),
    deadline: Duration,
) -> Output {
    let mut captured = spawn_captured(cmd.stdin(Stdio::piped()));
    let mut stdin = captured.child.stdin.take().expect("stdin piped");
    let input = input.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&input).map(|()| stdin));
    let stdin = writer
        .join()
        .expect("stdin writer")
        .expect("write child stdin");
    before_eof();
    drop(stdin);
    finish(cmd, captured, deadline)
}

/// A spawned child whose stdout and stderr are being drained into memory.
#[derive(Debug)]
struct Captured {
    child: Child,
    stdout: thread::JoinHandle<Vec<u8>>,
    stderr: thread::JoinHandle<Vec<u8>>,
}

fn spawn_captured(cmd: &mut Command) -> Captured {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout piped"));
    let stderr = drain(child.stderr.take().expect("stderr piped"));
    Captured {
        child,
        stdout,
        stderr,
    }
}

fn finish(cmd: &Command, mut captured: Captured, deadline: Duration) -> Output {
    let status = wait_with_deadline(cmd, &mut captured.child, deadline);
    Output {
        status,
        stdout: captured.stdout.join().expect("stdout reader"),
        stderr: captured.stderr.join().expect("stderr reader"),
    }
}

/// Reaps `child`; kills it (through its unreaped handle) and panics if it outlives `deadline`.
pub(crate) fn wait_with_deadline(
    cmd: &Command,
    child: &mut Child,
    deadline: Duration,
) -> ExitStatus {
    match wait_until(child, Instant::now() + deadline) {
        Ok(Some(status)) => status,
        Ok(None) => panic!("{cmd:?} did not finish within {deadline:?}"),
        Err(error) => panic!("wait {cmd:?}: {error}"),
    }
}

/// Reaps `child` if it exits by `until`; otherwise kills it through its unreaped handle (so
/// never a recycled PID), reaps it and returns `None`.
pub(crate) fn wait_until(child: &mut Child, until: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > until {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stops a daemon we spawned: SIGTERM, then SIGKILL if it is still running after `grace`.
/// Returns whether it exited on its own; either way it is reaped.
pub fn terminate(child: &mut Child, grace: Duration) -> bool {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: `pid` is our own unreaped child (we hold its `Child`), so it cannot have
        // been recycled for another process; kill(2) touches no memory.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    matches!(wait_until(child, Instant::now() + grace), Ok(Some(_)))
}

pub(crate) fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error only truncates what the assertion message shows.
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// stdout and stderr of `output` as text, for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "stdout: {:?} stderr: {:?}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Sends SIGKILL to `pid`, a process found in `/proc` that we did not spawn ourselves.
pub(crate) fn sigkill(pid: libc::pid_t) {
    // SAFETY: kill(2) touches no memory. `pid` was read from /proc moments ago and matched
    // on our private socket path; the window for it to exit and be recycled is accepted
    // because only processes holding that path (never reused) are ever targeted.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Whether `pid` still names a live process.
pub(crate) fn is_alive(pid: libc::pid_t) -> bool {
    !crate::leaks::is_zombie(pid)
}
