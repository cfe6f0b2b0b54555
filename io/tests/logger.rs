//! `binary://`, `binary-v2://` and `file://` outputs.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio as ChildStdio};
use std::time::Duration;

use common::{start_io, FdCheck};
use wren_io::{Engine, IoError, LoggerError, PreparedIo, Stdio};
use wren_process::DirectSpawner;

const GRACE: Duration = Duration::from_secs(10);

/// A logger in the style containerd documents: copies fd 3 and 4 to files, records its
/// arguments and environment, then signals ready on fd 5 (with `ready` as the byte(s)).
fn write_logger(dir: &Path, ready: &str) -> std::path::PathBuf {
    let script = format!(
        r#"#!/bin/sh
dir=$2
echo "$1 id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE $3=$4" > "$dir/meta"
cat <&3 4<&- 5>&- > "$dir/stdout" &
cat <&4 3<&- 5>&- > "$dir/stderr" &
exec 3<&- 4<&-
printf '{ready}' >&5
exec 5>&-
wait
"#
    );
    let path = dir.join("logger.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn run_writer(runc: wren_io::RuncIo, script: &str) {
    let [_, stdout, stderr] = runc.into_stdio();
    let status = Command::new("/bin/busybox")
        .args(["sh", "-c", script])
        .stdin(ChildStdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn binary_loggers_get_both_streams_and_their_environment() {
    let check = FdCheck::begin();
    let engine = Engine::start().unwrap();
    for (scheme, ready) in [("binary", ""), ("binary-v2", "ok")] {
        let dir = check.dir.path().join(scheme);
        std::fs::create_dir(&dir).unwrap();
        let logger = write_logger(&dir, ready);
        let uri = format!(
            "{scheme}://{}?dir={}&k=v%20w",
            logger.display(),
            dir.display()
        );
        let stdio = Stdio {
            stdout: uri,
            ..Stdio::default()
        };
        let (io, runc) = start_io(&engine, &stdio, "logged");
        assert!(io.drain().is_drained(), "the logger reads the pipes itself");
        run_writer(runc, "seq 1 50000; echo oops >&2");
        io.close(GRACE);
        let read = |name| std::fs::read_to_string(dir.join(name)).unwrap();
        let expected: String = (1..=50_000).map(|i| format!("{i}\n")).collect();
        assert!(read("stdout") == expected, "{scheme}: stdout incomplete");
        assert_eq!(read("stderr"), "oops\n");
        assert_eq!(read("meta"), "dir id=logged ns=wren-test k=v w\n");
    }
    drop(engine);
    check.end();
}

#[test]
fn a_v2_logger_must_write_its_ready_byte() {
    let check = FdCheck::begin();
    let logger = write_logger(check.dir.path(), "");
    let uri = format!(
        "binary-v2://{}?dir={}",
        logger.display(),
        check.dir.path().display()
    );
    let stdio = Stdio {
        stdout: uri,
        ..Stdio::default()
    };
    let err = PreparedIo::new(&stdio, &common::config("silent"), &DirectSpawner).unwrap_err();
    assert!(
        matches!(err, IoError::Logger(LoggerError::NotReady { .. })),
        "{err:?}"
    );
    check.end();
}

#[test]
fn a_logger_that_never_gets_ready_is_stopped() {
    let check = FdCheck::begin();
    let script = check.dir.path().join("sleeper.sh");
    std::fs::write(&script, "#!/bin/sh\nexec /bin/sleep 1000\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stdio = Stdio {
        stdout: format!("binary://{}", script.display()),
        ..Stdio::default()
    };
    let mut config = common::config("asleep");
    config.logger_ready_timeout = Duration::from_millis(200);
    let err = PreparedIo::new(&stdio, &config, &DirectSpawner).unwrap_err();
    assert!(
        matches!(err, IoError::Logger(LoggerError::ReadyTimeout { .. })),
        "{err:?}"
    );
    check.end();
}

#[test]
fn file_scheme_appends_both_streams() {
    let check = FdCheck::begin();
    let log = check.dir.path().join("nested/deeper/c.log");
    let engine = Engine::start().unwrap();
    let stdio = Stdio {
        stdout: format!("file://{}", log.display()),
        ..Stdio::default()
    };
    for round in 0..2 {
        let (io, runc) = start_io(&engine, &stdio, "file");
        run_writer(runc, &format!("seq 1 20000; echo err{round} >&2"));
        assert!(io.wait_drained(Duration::from_secs(60)));
        io.close(GRACE);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let numbers: String = (1..=20_000).map(|i| format!("{i}\n")).collect();
    for round in 0..2 {
        assert!(text.contains(&format!("err{round}\n")));
    }
    let without_errors = text.replace("err0\n", "").replace("err1\n", "");
    assert!(
        without_errors == numbers.repeat(2),
        "log file lost or reordered stdout"
    );
    assert_eq!(std::fs::metadata(&log).unwrap().mode() & 0o777, 0o644);
    drop(engine);
    check.end();
}
