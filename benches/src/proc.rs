//! Running commands under a deadline, timed precisely, with their stderr kept for errors.
//!
//! The wait is a `poll` on a pidfd: it wakes the moment the child exits (no polling
//! granularity in the timings) and a hung child is killed through its own unreaped
//! `Child`, never by a PID that could have been reused.

use std::io::{Read, Seek};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys;

/// Set by SIGINT/SIGTERM; checked between trials so cleanup still runs.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Registers SIGINT and SIGTERM to set this flag instead of killing the process.
    pub fn register() -> Result<Self> {
        let flag = Self::default();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&flag.0))
                .context("register signal handler")?;
        }
        Ok(flag)
    }

    /// Fails once a signal arrived, so the caller unwinds into cleanup.
    pub fn check(&self) -> Result<()> {
        if self.0.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }
}

/// Runs `cmd` (stdin null unless set; stdout as the caller set it) and returns how long it
/// took from spawn to exit. Fails on a non-zero exit (with its stderr) or past `deadline`.
pub fn run_timed(cmd: &mut Command, deadline: Duration) -> Result<Duration> {
    let mut stderr = tempfile::tempfile().context("stderr temp file")?;
    cmd.stderr(stderr.try_clone().context("dup stderr file")?);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", describe(cmd)))?;
    let status = wait_deadline(&mut child, deadline).with_context(|| describe(cmd))?;
    let elapsed = started.elapsed();
    if !status.success() {
        let mut text = String::new();
        stderr.rewind().context("rewind stderr")?;
        // A read failure only shortens the error message.
        let _ = stderr.read_to_string(&mut text);
        bail!("{} failed ({status}): {}", describe(cmd), text.trim());
    }
    Ok(elapsed)
}

/// Runs `cmd` with output discarded: a setup or cleanup step whose time is not measured.
pub fn run_quiet(cmd: &mut Command, deadline: Duration) -> Result<()> {
    run_timed(cmd.stdin(Stdio::null()).stdout(Stdio::null()), deadline).map(drop)
}

/// Runs `cmd` and returns its stdout (bounded output: listings, versions).
pub fn output(cmd: &mut Command, deadline: Duration) -> Result<String> {
    let mut out = tempfile::tempfile().context("stdout temp file")?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().context("dup stdout file")?);
    run_timed(cmd, deadline)?;
    let mut text = String::new();
    out.rewind().context("rewind stdout")?;
    out.read_to_string(&mut text).context("read stdout")?;
    Ok(text)
}

/// Waits for `child` to exit, killing and reaping it if it outlives `deadline`.
pub fn wait_deadline(child: &mut Child, deadline: Duration) -> Result<ExitStatus> {
    let pidfd = sys::pidfd_open(child.id()).context("pidfd_open")?;
    if !sys::wait_readable(&pidfd, deadline).context("poll pidfd")? {
        // Kill and reap through the Child: its PID cannot have been reused while unreaped.
        let _ = child.kill();
        let _ = child.wait();
        bail!("did not finish within {deadline:?}");
    }
    child.wait().context("wait")
}

/// `program arg arg…` for messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
