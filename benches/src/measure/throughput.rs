//! stdout throughput: `dd` writes zeros in the container, the bench drains `ctr run`'s (or,
//! for the floor, `runc run`'s) stdout like `cat > /dev/null` would, and times the stream
//! from its first byte to EOF, so container start-up does not dilute the rate. The "shim
//! alone" row reads the shim's stdout FIFO itself, as containerd's client would, with no
//! `ctr` copying it on.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wren_tests::unique_id;

use super::lab::{Lab, Trial};
use super::{fill, Bench, Subject};
use crate::cli::Shim;
use crate::report::{Better, Metric};
use crate::{proc, sys};

/// How long one stream may take (1 GiB at a pathological 10 MB/s).
const DEADLINE: Duration = Duration::from_secs(120);

/// What one trial saw.
#[derive(Debug, Clone, Copy)]
struct Stream {
    bytes: u64,
    /// First byte to EOF.
    streaming: Duration,
    /// Spawn to exit.
    total: Duration,
}

/// Interleaved stdout streams of `sizes.stream_bytes` through every shim and runc alone.
pub fn stdout(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let bytes = bench.sizes.stream_bytes;
    let count = format!("count={}", bytes >> 20);
    let dd = ["dd", "if=/dev/zero", "bs=1M", count.as_str()];
    let subjects = bench.subjects();
    let mut totals: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
    let results = bench.warm_then_measure(&subjects, bench.sizes.stream_trials, |subject, _| {
        let id = unique_id("stream");
        let mut cmd = match subject {
            Subject::Floor => bench.floor.run_command(&bench.floor.bundle(&id, &dd)?, &id),
            Subject::Shim(shim) => bench.containerd.run_command(shim, &["--rm"], &id, &dd),
        };
        let stream = drain(&mut cmd)?;
        if stream.bytes != bytes {
            bail!("read {} bytes, dd wrote {bytes}", stream.bytes);
        }
        let slot = subjects
            .iter()
            .position(|s| *s == subject)
            .context("subject")?;
        totals[slot].push(rate(bytes, stream.total));
        Ok(rate(bytes, stream.streaming))
    })?;
    let mib = bytes >> 20;
    let mut steady = Metric::new(
        "stdout_mb_s",
        format!("stdout throughput, {mib} MiB (first byte → EOF)"),
        "MB/s",
        Better::Higher,
    );
    fill(&mut steady, &subjects, results);
    // The warm-up round is not part of the measured series.
    let mut whole = Metric::new(
        "stdout_total_mb_s",
        format!("stdout throughput, {mib} MiB (incl. start)"),
        "MB/s",
        Better::Higher,
    );
    let measured = totals
        .into_iter()
        .map(|mut t| Ok(t.split_off(1.min(t.len()))))
        .collect();
    fill(&mut whole, &subjects, measured);
    Ok(vec![steady, whole])
}

/// Streams of `sizes.stream_bytes` through each shim alone, driven over ttrpc, against the
/// same `runc run` floor.
pub fn stdout_shim_alone(bench: &Bench<'_>) -> Result<Vec<Metric>> {
    let bytes = bench.sizes.stream_bytes;
    let count = format!("count={}", bytes >> 20);
    let dd = ["dd", "if=/dev/zero", "bs=1M", count.as_str()];
    let lab = Lab::new(bench, "stdout")?;
    let subjects = bench.subjects();
    let results = bench.warm_then_measure(&subjects, bench.sizes.stream_trials, |subject, _| {
        let stream = match subject {
            Subject::Floor => {
                let id = unique_id("stream");
                drain(&mut bench.floor.run_command(&bench.floor.bundle(&id, &dd)?, &id))?
            }
            Subject::Shim(shim) => shim_stream(&lab, bench, shim, &dd)?,
        };
        if stream.bytes != bytes {
            bail!("read {} bytes, dd wrote {bytes}", stream.bytes);
        }
        Ok(rate(bytes, stream.streaming))
    })?;
    let mut metric = Metric::new(
        "direct_stdout_mb_s",
        format!(
            "stdout throughput, shim alone, {} MiB: the bench reads the stdout FIFO (first byte → EOF)",
            bytes >> 20
        ),
        "MB/s",
        Better::Higher,
    );
    fill(&mut metric, &subjects, results);
    Ok(vec![metric])
}

/// One stream through `shim`: Create with a stdout FIFO, Start, read it to EOF, Wait, Delete.
fn shim_stream(lab: &Lab, bench: &Bench<'_>, shim: &Shim, dd: &[&str]) -> Result<Stream> {
    let trial = Trial::launch(lab, bench, shim, dd)?;
    let mut create = trial.create.clone();
    let mut stdout = fifo_reader(&trial.bundle.join("stdout"), &mut create.stdout)?;
    // containerd's Go shim takes stdout and stderr together; dd's few lines of stderr wait
    // unread in the FIFO.
    let _stderr = fifo_reader(&trial.bundle.join("stderr"), &mut create.stderr)?;
    let client = trial.daemon()?.client();
    let started = Instant::now();
    client.create(&create)?;
    // The shim opened its writer in Create and closes it once the output has ended.
    let (sender, read) = std::sync::mpsc::channel();
    thread::spawn(move || sender.send(read_to_eof(&mut stdout)));
    client.start(&trial.id, "")?;
    let exit = client.wait(&trial.id, "")?;
    let (bytes, first, eof) = read
        .recv_timeout(DEADLINE)
        .context("the stdout fifo still open after the exit")?
        .context("read the stdout fifo")?;
    client.delete(&trial.id, "")?;
    if exit.status != 0 {
        bail!("dd exited with status {}", exit.status);
    }
    Ok(Stream {
        bytes,
        streaming: first.map_or(Duration::ZERO, |first| eof.duration_since(first)),
        total: eof.duration_since(started),
    })
}

/// Makes a FIFO at `fifo`, names it in `field` and returns its read end, opened at once (no
/// writer yet) and then made blocking.
fn fifo_reader(fifo: &Path, field: &mut String) -> Result<File> {
    sys::mkfifo(fifo, 0o600).context("mkfifo")?;
    *field = fifo.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .with_context(|| format!("open {}", fifo.display()))?;
    // SAFETY: F_SETFL on a descriptor this function owns; no memory is passed.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("make {} blocking", fifo.display()));
    }
    Ok(file)
}

/// Reads `source` to EOF in 1 MiB reads: the byte count, the first byte's time and EOF's.
fn read_to_eof(source: &mut impl Read) -> std::io::Result<(u64, Option<Instant>, Instant)> {
    let mut buf = vec![0_u8; 1 << 20];
    let (mut bytes, mut first) = (0_u64, None);
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            return Ok((bytes, first, Instant::now()));
        }
        first.get_or_insert_with(Instant::now);
        bytes += n as u64;
    }
}

/// Runs `cmd` with stdout drained by a reader thread that timestamps first byte and EOF.
fn drain(cmd: &mut Command) -> Result<Stream> {
    let mut stderr = tempfile::tempfile().context("stderr temp file")?;
    cmd.stdout(Stdio::piped())
        .stderr(stderr.try_clone().context("dup stderr")?);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", proc::describe(cmd)))?;
    let mut pipe = child.stdout.take().context("stdout piped")?;
    let reader = thread::spawn(move || read_to_eof(&mut pipe));
    let status = proc::wait_deadline(&mut child, DEADLINE).with_context(|| proc::describe(cmd))?;
    let total = started.elapsed();
    let (bytes, first, eof) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?
        .context("read stdout")?;
    if !status.success() {
        let mut text = String::new();
        use std::io::Seek;
        stderr.rewind().context("rewind stderr")?;
        let _ = stderr.read_to_string(&mut text);
        bail!("{} failed ({status}): {}", proc::describe(cmd), text.trim());
    }
    let streaming = first.map_or(Duration::ZERO, |f| eof.duration_since(f));
    Ok(Stream {
        bytes,
        streaming,
        total,
    })
}

/// Megabytes (10^6) per second.
fn rate(bytes: u64, over: Duration) -> f64 {
    bytes as f64 / 1e6 / over.as_secs_f64().max(1e-9)
}
