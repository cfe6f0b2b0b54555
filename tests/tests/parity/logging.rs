//! Logging drivers chosen with `ctr run --log-uri`: a `binary://` logger process gets the
//! container's stdout and stderr, a `file://` URI gets both in one file.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use wren_tests::containerd::{output_text, run_with_deadline, CTR_DEADLINE, STATE_DEADLINE};
use wren_tests::{Containerd, Runtime};

/// Writes two lines to each stream and exits 4.
const SCRIPT: &str = "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2; exit 4";

/// containerd's binary logging protocol: the shim starts the logger with the container's
/// stdout on fd 3, its stderr on fd 4 and a pipe on fd 5 that the logger closes once ready;
/// the URI's query arrives as `key value` arguments, the container in `CONTAINER_*` variables.
/// The copies close fd 5 too, or readiness would wait for them to end.
const LOGGER: &str = r#"#!/bin/sh
prefix=$2
echo "$CONTAINER_NAMESPACE $CONTAINER_ID $*" > "$prefix.env"
cat <&3 5>&- > "$prefix.stdout" &
cat <&4 5>&- > "$prefix.stderr" &
exec 5>&-
wait
"#;

pub fn binary_logger_receives_both_streams(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("binlog");
    let dir = cd.scratch("logger");
    let logger = dir.join("logger.sh");
    write_executable(&logger, LOGGER);
    let prefix = dir.join(&id).display().to_string();
    let uri = format!("binary://{}?out={prefix}", logger.display());

    let mut run = cd.run_command(&["--rm", "--log-uri", &uri], &id, &["sh", "-c", SCRIPT]);
    let output = run_with_deadline(run.stdin(Stdio::null()), CTR_DEADLINE);
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));
    assert!(output.stdout.is_empty(), "{}", output_text(&output));

    let env = format!("{} {id} out {prefix}\n", cd.namespace());
    wait_for_content(Path::new(&format!("{prefix}.env")), &env);
    wait_for_content(Path::new(&format!("{prefix}.stdout")), "out-1\nout-2\n");
    wait_for_content(Path::new(&format!("{prefix}.stderr")), "err-1\nerr-2\n");
    cd.assert_no_leaks();
}

pub fn file_log_uri_receives_output(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("filelog");
    let file = cd.scratch("filelog").join(format!("{id}.log"));
    let uri = format!("file://{}", file.display());

    let mut run = cd.run_command(&["--rm", "--log-uri", &uri], &id, &["sh", "-c", SCRIPT]);
    let output = run_with_deadline(run.stdin(Stdio::null()), CTR_DEADLINE);
    assert_eq!(output.status.code(), Some(4), "{}", output_text(&output));

    // Both streams share the file; each line is one write, but the streams interleave freely.
    let deadline = Instant::now() + STATE_DEADLINE;
    loop {
        let text = fs::read_to_string(&file).unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        if lines == ["err-1", "err-2", "out-1", "out-2"] {
            break;
        }
        if Instant::now() >= deadline && rt == Runtime::Go {
            // Seen once in CI: the Go shim's file logger dropped all of stderr ("out-1\nout-2\n"
            // only). The expectation is right; the reference shim loses output here now and
            // then, and wren must not.
            eprintln!("NOTE: the Go shim lost lines of its file log: {text:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{}: {text:?}", file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    cd.assert_no_leaks();
}

pub fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// Waits (bounded) until `path` holds exactly `expected`: a logger may still be writing when
/// ctr returns.
fn wait_for_content(path: &Path, expected: &str) {
    let deadline = Instant::now() + STATE_DEADLINE;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {text:?}, expected {expected:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
