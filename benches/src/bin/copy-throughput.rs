//! Throughput of moving container output from a pipe to a client FIFO, three ways:
//! wren's copy engine (splice), a plain read/write loop in Rust, and `cat`.
//!
//! `copy-throughput [--quick]`: prints one row per method (median of the trials).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ChildStdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wren_io::{Engine, IoConfig, PreparedIo, Stdio};
use wren_process::DirectSpawner;

const CHUNK: usize = 1 << 20;

/// A named way of moving `bytes` into the FIFO at the path.
type Method<'a> = (&'a str, &'a dyn Fn(&Path, u64) -> Result<Duration>);

fn main() -> Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (bytes, trials) = if quick {
        (256 << 20, 3)
    } else {
        (4u64 << 30, 5)
    };
    let dir = scratch_dir()?;
    let engine = Engine::start()?;
    let methods: [Method<'_>; 3] = [
        ("wren engine (splice)", &|fifo, n| {
            via_engine(&engine, fifo, n)
        }),
        ("rust read/write loop", &via_copy_loop),
        ("cat", &via_cat),
    ];
    println!(
        "moving {} MiB pipe -> FIFO, median of {trials} trials",
        bytes >> 20
    );
    println!("{:<24} {:>10} {:>10}", "method", "MB/s", "seconds");
    // Trials are interleaved (every method once per round) so that load from other
    // processes spreads over all methods instead of skewing one.
    let mut times = vec![Vec::with_capacity(trials); methods.len()];
    for trial in 0..trials {
        for ((name, run), times) in methods.iter().zip(&mut times) {
            let fifo = dir.join(format!(
                "{}-{trial}",
                name.replace([' ', '(', ')', '/'], "_")
            ));
            mkfifo(&fifo)?;
            times.push(run(&fifo, bytes).with_context(|| format!("{name} trial {trial}"))?);
            std::fs::remove_file(&fifo)?;
        }
    }
    for ((name, _), mut times) in methods.iter().zip(times) {
        times.sort();
        let median = times[times.len() / 2].as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
        let rate = bytes as f64 / median / 1e6;
        println!("{name:<24} {rate:>10.0} {median:>10.3}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn scratch_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("wren-copy-bench-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

fn mkfifo(path: &Path) -> Result<()> {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .context("run mkfifo")?;
    ensure!(status.success(), "mkfifo {} failed", path.display());
    Ok(())
}

/// Writes `bytes` bytes into `sink` from a thread, then closes it.
fn write_bytes(mut sink: File, bytes: u64) -> JoinHandle<std::io::Result<()>> {
    std::thread::spawn(move || {
        let buf = vec![0x5a_u8; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
            sink.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    })
}

/// Reads `fifo` to EOF (the FIFO must already have a writer) and returns the byte count.
fn read_to_eof(fifo: &Path) -> Result<u64> {
    let mut reader = File::open(fifo).with_context(|| format!("open {}", fifo.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        match reader.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

fn finish(
    start: Instant,
    read: u64,
    expected: u64,
    writer: JoinHandle<std::io::Result<()>>,
) -> Result<Duration> {
    let elapsed = start.elapsed();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    ensure!(read == expected, "read {read} bytes, expected {expected}");
    Ok(elapsed)
}

/// A pipe made from a scratch FIFO (a FIFO is a named pipe: the same kernel object), so
/// the baselines need no syscall crate. The writer is opened read-write, which never
/// blocks; the reader then opens at once because a writer exists.
fn pipe(fifo: &Path) -> Result<(File, File)> {
    let source = fifo.with_extension("source");
    mkfifo(&source)?;
    let write = OpenOptions::new().read(true).write(true).open(&source)?;
    let read = File::open(&source)?;
    std::fs::remove_file(&source)?;
    Ok((read, write))
}

fn via_engine(engine: &Engine, fifo: &Path, bytes: u64) -> Result<Duration> {
    let stdio = Stdio {
        stdout: fifo.to_string_lossy().into_owned(),
        ..Stdio::default()
    };
    let mut prepared = PreparedIo::new(&stdio, &IoConfig::new("bench", "bench"), &DirectSpawner)?;
    let pipe_end = prepared.take_runc_io().stdout.context("no stdout pipe")?;
    let io = prepared.start(&engine.handle(), Duration::from_secs(5))?;
    let start = Instant::now();
    let writer = write_bytes(File::from(pipe_end), bytes);
    let read = read_to_eof(fifo)?;
    let elapsed = finish(start, read, bytes, writer)?;
    io.close(Duration::ZERO);
    Ok(elapsed)
}

fn via_copy_loop(fifo: &Path, bytes: u64) -> Result<Duration> {
    let (mut source, sink) = pipe(fifo)?;
    let mut target = OpenOptions::new().read(true).write(true).open(fifo)?;
    let start = Instant::now();
    let writer = write_bytes(sink, bytes);
    let copier = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match source.read(&mut buf)? {
                0 => return Ok(()),
                n => target.write_all(&buf[..n])?,
            }
        }
    });
    let read = read_to_eof(fifo)?;
    copier
        .join()
        .map_err(|_| anyhow::anyhow!("copier panicked"))??;
    finish(start, read, bytes, writer)
}

fn via_cat(fifo: &Path, bytes: u64) -> Result<Duration> {
    let (source, sink) = pipe(fifo)?;
    let target = OpenOptions::new().read(true).write(true).open(fifo)?;
    let start = Instant::now();
    let mut cat = Command::new("cat")
        .stdin(source)
        .stdout(target)
        .stderr(ChildStdio::inherit())
        .spawn()?;
    let writer = write_bytes(sink, bytes);
    let read = read_to_eof(fifo)?;
    ensure!(cat.wait()?.success(), "cat failed");
    finish(start, read, bytes, writer)
}
