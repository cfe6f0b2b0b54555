//! stdin: the client's FIFO to the container, CloseIO, and reattaching.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio as ChildStdio};

use common::{client_writer, mkfifo, start_io, FdCheck};
use wren_io::{Engine, Stdio};

#[test]
fn stdin_arrives_survives_reattach_and_close_io_gives_eof() {
    let check = FdCheck::begin();
    let path = mkfifo(check.dir.path(), "stdin");
    let engine = Engine::start().unwrap();
    let stdio = Stdio {
        stdin: path.to_str().unwrap().into(),
        ..Stdio::default()
    };
    let (mut io, runc) = start_io(&engine, &stdio, "stdin");
    let mut cat = {
        let [stdin, _, _] = runc.into_stdio();
        let mut command = Command::new("/bin/busybox");
        command.arg("cat").stdin(stdin).stdout(ChildStdio::piped());
        command.spawn().unwrap()
    };
    let mut echoed = cat.stdout.take().unwrap();

    let mut first = client_writer(&path);
    first.write_all(b"hello\n").unwrap();
    drop(first); // the client detaches: the shim's own writer keeps cat from seeing EOF
    let mut second = client_writer(&path);
    second.write_all(b"world\n").unwrap();
    let mut seen = [0u8; 12];
    echoed.read_exact(&mut seen).unwrap();
    assert_eq!(&seen, b"hello\nworld\n");
    drop(second);

    io.close_stdin(); // CloseIO: now the client's close is the container's EOF
    let status = cat.wait().unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    echoed.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop((io, engine, echoed));
    check.end();
}

#[test]
fn close_io_waits_for_the_client_to_finish_writing() {
    let check = FdCheck::begin();
    let path = mkfifo(check.dir.path(), "stdin");
    let engine = Engine::start().unwrap();
    let stdio = Stdio {
        stdin: path.to_str().unwrap().into(),
        ..Stdio::default()
    };
    let (mut io, runc) = start_io(&engine, &stdio, "stdin-late");
    let mut writer = client_writer(&path);
    io.close_stdin(); // CloseIO before the client is done: nothing is cut short
    let cat = {
        let [stdin, _, _] = runc.into_stdio();
        let mut command = Command::new("/bin/busybox");
        command
            .args(["wc", "-c"])
            .stdin(stdin)
            .stdout(ChildStdio::piped());
        command.spawn().unwrap()
    };
    let payload = vec![b'x'; 300_000];
    writer.write_all(&payload).unwrap();
    drop(writer);
    let output = cat.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap().trim(), "300000");
    drop((io, engine));
    check.end();
}
