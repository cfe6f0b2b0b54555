//! stdout throughput: `dd` writes zeros in the container, the bench drains `ctr run`'s (or,
//! for the floor, `runc run`'s) stdout like `cat > /dev/null` would, and times the stream
//! from its first byte to EOF, so container start-up does not dilute the rate.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wren_tests::unique_id;

use super::{fill, Bench, Subject};
use crate::proc;
use crate::report::{Better, Metric};

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
    let reader = thread::spawn(
        move || -> std::io::Result<(u64, Option<Instant>, Instant)> {
            let mut buf = vec![0_u8; 1 << 20];
            let (mut bytes, mut first) = (0_u64, None);
            loop {
                let n = pipe.read(&mut buf)?;
                if n == 0 {
                    return Ok((bytes, first, Instant::now()));
                }
                first.get_or_insert_with(Instant::now);
                bytes += n as u64;
            }
        },
    );
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
