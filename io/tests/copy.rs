//! The copy engine moving container output to client FIFOs.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio as ChildStdio};
use std::time::Duration;

use common::{client_reader, mkfifo, read_all, start_io, threads_named, vm_rss_kib, FdCheck};
use wren_io::{EndpointError, Engine, IoError, IoOwner, PreparedIo, Stdio};
use wren_process::DirectSpawner;

const GIB: u64 = 1 << 30;
const CHUNK: usize = 1 << 20;
const DRAIN_BOUND: Duration = Duration::from_secs(60);

fn stdout_only(path: &std::path::Path) -> Stdio {
    Stdio {
        stdout: path.to_str().unwrap().into(),
        ..Stdio::default()
    }
}

/// Fills `buf` with the little-endian word indices starting at `*word`.
fn fill_pattern(buf: &mut [u8], word: &mut u64) {
    for chunk in buf.chunks_exact_mut(8) {
        chunk.copy_from_slice(&word.to_le_bytes());
        *word += 1;
    }
}

/// Checks that `buf` holds the word indices starting at `*word`: any lost, repeated or
/// reordered byte breaks the sequence.
fn check_pattern(buf: &[u8], word: &mut u64) {
    for chunk in buf.chunks_exact(8) {
        let got = u64::from_le_bytes(chunk.try_into().unwrap());
        assert_eq!(got, *word, "stream corrupt at byte {}", *word * 8);
        *word += 1;
    }
}

#[test]
fn a_gigabyte_through_a_slow_reader_arrives_whole_in_flat_memory() {
    let check = FdCheck::begin();
    let stdout = mkfifo(check.dir.path(), "stdout");
    let mut reader = client_reader(&stdout);
    let engine = Engine::start().unwrap();
    let (io, runc) = start_io(&engine, &stdout_only(&stdout), "gib");

    let mut write_buf = vec![1u8; CHUNK];
    let mut read_buf = vec![1u8; CHUNK];
    let mut pipe = File::from(runc.stdout.unwrap());
    let writer = std::thread::spawn(move || {
        let mut word = 0;
        for _ in 0..GIB / CHUNK as u64 {
            fill_pattern(&mut write_buf, &mut word);
            pipe.write_all(&write_buf).unwrap();
        }
    });
    let baseline = vm_rss_kib();
    let (mut word, mut peak) = (0, baseline);
    for chunk in 0..GIB / CHUNK as u64 {
        // A slow consumer at first: the engine must hold back, not buffer.
        if chunk < 64 {
            std::thread::sleep(Duration::from_millis(2));
        }
        reader.read_exact(&mut read_buf).unwrap();
        check_pattern(&read_buf, &mut word);
        if chunk % 64 == 0 {
            peak = peak.max(vm_rss_kib());
        }
    }
    writer.join().unwrap();
    assert_eq!(
        reader.read(&mut read_buf).unwrap(),
        0,
        "bytes beyond the gigabyte"
    );
    assert!(io.wait_drained(DRAIN_BOUND));
    let growth_kib = peak.saturating_sub(baseline);
    assert!(
        growth_kib < 8 * 1024,
        "RSS grew by {growth_kib} KiB while copying"
    );
    drop((io, reader, engine));
    check.end();
}

#[test]
fn output_of_a_process_that_exits_at_once_is_complete() {
    let check = FdCheck::begin();
    let (out_path, err_path) = (
        mkfifo(check.dir.path(), "out"),
        mkfifo(check.dir.path(), "err"),
    );
    let (out, err) = (client_reader(&out_path), client_reader(&err_path));
    let engine = Engine::start().unwrap();
    let stdio = Stdio {
        stdout: out_path.to_str().unwrap().into(),
        stderr: err_path.to_str().unwrap().into(),
        ..Stdio::default()
    };
    let (io, runc) = start_io(&engine, &stdio, "exit-at-once");
    assert!(runc.stdin.is_none(), "no stdin pipe without a stdin path");
    let readers = [out, err].map(|file| std::thread::spawn(move || read_all(file)));
    let [_, stdout, stderr] = runc.into_stdio();
    let status = Command::new("/bin/busybox")
        .args(["sh", "-c", "seq 1 100000; echo bye >&2"])
        .stdin(ChildStdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .unwrap();
    assert!(status.success());
    let [out, err] = readers.map(|reader| reader.join().unwrap());
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert!(
        out == expected,
        "stdout differs: {} bytes, expected {}",
        out.len(),
        expected.len()
    );
    assert_eq!(err, "bye\n");
    assert!(io.wait_drained(DRAIN_BOUND));
    drop((io, engine));
    check.end();
}

#[test]
fn output_left_behind_a_full_fifo_drains_after_its_writer_is_gone() {
    let check = FdCheck::begin();
    let path = mkfifo(check.dir.path(), "stdout");
    let mut reader = client_reader(&path);
    let engine = Engine::start().unwrap();
    let (io, runc) = start_io(&engine, &stdout_only(&path), "left-behind");
    // More than the FIFO holds but less than FIFO and pipe together: the writer is done and
    // gone (its hang-up already reported) while the rest still waits in the pipe, and only
    // the client's reads can move it on.
    let payload: Vec<u8> = (0..100 * 1024_u32).map(|i| (i % 251) as u8).collect();
    let mut pipe = File::from(runc.stdout.unwrap());
    pipe.write_all(&payload).unwrap();
    drop(pipe);
    let mut seen = vec![0u8; payload.len()];
    reader.read_exact(&mut seen).unwrap();
    assert!(seen == payload, "stream corrupt");
    assert!(io.wait_drained(DRAIN_BOUND), "EOF never reached the engine");
    assert_eq!(
        reader.read(&mut seen).unwrap(),
        0,
        "bytes beyond the payload"
    );
    drop((io, reader, engine));
    check.end();
}

#[test]
fn a_reader_restart_neither_kills_the_writer_nor_loses_output() {
    let check = FdCheck::begin();
    let path = mkfifo(check.dir.path(), "stdout");
    let mut first = client_reader(&path);
    let engine = Engine::start().unwrap();
    let (io, runc) = start_io(&engine, &stdout_only(&path), "restart");
    let mut child = {
        let [_, stdout, _] = runc.into_stdio();
        let script = "echo one; read x; echo two; read y; echo three";
        let mut command = Command::new("/bin/busybox");
        command
            .args(["sh", "-c", script])
            .stdin(ChildStdio::piped())
            .stdout(stdout);
        command.spawn().unwrap()
    };
    let mut line = [0u8; 4];
    first.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"one\n");
    drop(first); // containerd goes away
    let mut control = child.stdin.take().unwrap();
    control.write_all(b"go\n").unwrap(); // "two" is written while nobody reads
    let second = client_reader(&path); // containerd is back
    control.write_all(b"go\n").unwrap();
    drop(control);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "writer died while the reader was away: {status:?}"
    );
    assert_eq!(read_all(second), "two\nthree\n");
    assert!(io.wait_drained(DRAIN_BOUND));
    drop((io, engine));
    check.end();
}

#[test]
fn one_io_thread_serves_many_processes() {
    let check = FdCheck::begin();
    let engine = Engine::start().unwrap();
    let mut live = Vec::new();
    for i in 0..20 {
        let path = mkfifo(check.dir.path(), &format!("out{i}"));
        let reader = client_reader(&path);
        let (io, runc) = start_io(&engine, &stdout_only(&path), &format!("many-{i}"));
        let mut pipe = File::from(runc.stdout.unwrap());
        writeln!(pipe, "process {i}").unwrap();
        live.push((io, reader));
    }
    for (i, (io, reader)) in live.into_iter().enumerate() {
        assert!(io.wait_drained(DRAIN_BOUND), "process {i} did not drain");
        assert_eq!(read_all(reader), format!("process {i}\n"));
    }
    // Counted only now: a thread names itself once it runs, which the drains above prove.
    assert_eq!(threads_named("io"), 1);
    drop(engine);
    check.end();
}

#[test]
fn runc_ends_belong_to_the_io_owner() {
    wren_tests::require_root!();
    let check = FdCheck::begin();
    let (stdin, stdout) = (
        mkfifo(check.dir.path(), "in"),
        mkfifo(check.dir.path(), "out"),
    );
    let stdio = Stdio {
        stdin: stdin.to_str().unwrap().into(),
        stdout: stdout.to_str().unwrap().into(),
        ..Stdio::default()
    };
    let mut config = common::config("owner");
    config.owner = IoOwner {
        uid: 4242,
        gid: 4343,
    };
    let mut prepared = PreparedIo::new(&stdio, &config, &DirectSpawner).unwrap();
    let runc = prepared.take_runc_io();
    assert!(
        runc.stderr.is_none(),
        "no stderr pipe without a stderr path"
    );
    for end in [runc.stdin.as_ref().unwrap(), runc.stdout.as_ref().unwrap()] {
        let stat = nix::sys::stat::fstat(end.as_raw_fd()).unwrap();
        assert_eq!((stat.st_uid, stat.st_gid), (4242, 4343));
    }
    drop((runc, prepared));
    check.end();
}

#[test]
fn a_missing_fifo_fails_cleanly() {
    let check = FdCheck::begin();
    let stdin = mkfifo(check.dir.path(), "in");
    let stdio = Stdio {
        stdin: stdin.to_str().unwrap().into(),
        stdout: check.dir.path().join("missing").to_str().unwrap().into(),
        ..Stdio::default()
    };
    let err = PreparedIo::new(&stdio, &common::config("missing"), &DirectSpawner).unwrap_err();
    assert!(
        matches!(err, IoError::Endpoint(EndpointError::StatOutput { .. })),
        "{err:?}"
    );
    let unknown = Stdio {
        stdout: "tcp://127.0.0.1:1".into(),
        ..Stdio::default()
    };
    let err = PreparedIo::new(&unknown, &common::config("unknown"), &DirectSpawner).unwrap_err();
    assert!(err.to_string().starts_with("unknown stdio scheme"), "{err}");
    check.end();
}
