//! A real pty through runc: the console socket, output, stdin, resize, and cleanup.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ChildStdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{client_reader, client_writer, mkfifo, read_all, FdCheck};
use wren_io::{ConsoleSocket, Engine, IoError, PreparedIo, Stdio};
use wren_process::DirectSpawner;
use wren_tests::Bundle;

const BOUND: Duration = Duration::from_secs(60);

/// A runc container under a private root, force-deleted when dropped.
struct Container {
    root: PathBuf,
    id: String,
}

impl Container {
    fn runc(&self, args: &[&str]) {
        let output = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(ChildStdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "runc {args:?} failed: {stderr}");
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .stderr(ChildStdio::null())
            .status();
    }
}

fn pty_bundle(dir: &Path) -> Bundle {
    let script = "read line; stty size; echo got:$line";
    let mut bundle = Bundle::new(&dir.join("bundle"), &["sh", "-c", script]);
    bundle.spec["process"]["terminal"] = true.into();
    bundle.save();
    bundle
}

#[test]
fn a_runc_pty_carries_output_and_stdin_and_resizes() {
    wren_tests::require_root!();
    let check = FdCheck::begin();
    let dir = check.dir.path();
    let bundle = pty_bundle(dir);
    let (stdin, stdout) = (mkfifo(dir, "stdin"), mkfifo(dir, "stdout"));
    let reader = client_reader(&stdout);
    let engine = Engine::start().unwrap();
    let stdio = Stdio {
        stdin: stdin.to_str().unwrap().into(),
        stdout: stdout.to_str().unwrap().into(),
        stderr: String::new(),
        terminal: true,
    };
    let mut config = common::config("pty");
    config.console_dir = dir.to_owned();
    let mut prepared = PreparedIo::new(&stdio, &config, &DirectSpawner).unwrap();
    let runc_io = prepared.take_runc_io();
    assert!(
        runc_io.stdin.is_none() && runc_io.stdout.is_none(),
        "a pty needs no pipes"
    );
    let socket = prepared
        .console_socket()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();

    let container = Container {
        root: dir.join("runc-root"),
        id: wren_tests::unique_id("wren-io-pty"),
    };
    let bundle_path = bundle.path.to_str().unwrap();
    container.runc(&[
        "create",
        "--bundle",
        bundle_path,
        "--console-socket",
        &socket,
        &container.id,
    ]);
    let io = prepared.start(&engine.handle(), BOUND).unwrap();
    assert!(
        !Path::new(&socket).exists(),
        "the console socket outlived its use"
    );
    io.resize(100, 40).unwrap();
    container.runc(&["start", &container.id]);

    let (sender, output) = mpsc::channel();
    std::thread::spawn(move || sender.send(read_all(reader)));
    let mut writer = client_writer(&stdin);
    writer.write_all(b"hello\n").unwrap();
    let text = output.recv_timeout(BOUND).expect("pty output never ended");
    assert!(text.contains("40 100"), "resize not seen inside: {text:?}");
    assert!(text.contains("got:hello"), "stdin did not arrive: {text:?}");
    assert!(io.wait_drained(BOUND));

    drop(writer);
    io.close(Duration::ZERO);
    container.runc(&["delete", &container.id]);
    drop((container, engine));
    check.end();
}

#[test]
fn a_runc_that_never_connects_cannot_hang_the_caller() {
    let check = FdCheck::begin();
    let socket = ConsoleSocket::new_in(check.dir.path()).unwrap();
    let err = socket
        .receive_master(Duration::from_millis(50))
        .unwrap_err();
    assert!(
        matches!(err, wren_io::ConsoleError::ConnectTimeout { .. }),
        "{err:?}"
    );
    let engine = Engine::start().unwrap();
    let stdio = Stdio {
        terminal: true,
        ..Stdio::default()
    };
    let mut config = common::config("no-runc");
    config.console_dir = check.dir.path().to_owned();
    let prepared = PreparedIo::new(&stdio, &config, &DirectSpawner).unwrap();
    let err = prepared
        .start(&engine.handle(), Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(err, IoError::Console(_)), "{err:?}");
    drop((socket, engine));
    check.end();
}
