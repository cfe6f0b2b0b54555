//! The shim binary by hand: `-h`/`--help` print the usage, as the Go shim does, and no
//! arguments at all say who runs it instead of `invalid namespace ""`.

use std::process::{Command, Stdio};

fn shim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_containerd-shim-wren-v2"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn help_prints_the_usage() {
    for flag in ["--help", "-h"] {
        let out = shim(&[flag]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Usage of"), "{stdout}");
        assert!(stdout.contains("io.containerd.wren.v2"), "{stdout}");
        assert!(stdout.contains("-namespace"), "{stdout}");
    }
}

#[test]
fn no_arguments_say_containerd_runs_it() {
    let out = shim(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("containerd starts this shim"), "{stderr}");
    assert!(!stderr.contains("invalid namespace"), "{stderr}");
}
