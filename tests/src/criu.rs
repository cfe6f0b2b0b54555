//! Whether CRIU works on this kernel, for checkpoint and restore tests.
//!
//! On a cgroup v1 hybrid host `criu check` fails, so those tests print a visible `SKIP` and
//! exercise the error path instead. The cgroup v2 VM lane sets `WREN_TESTS_CRIU=1`: there a
//! failing `criu check` is a test failure, so the lane cannot go green by skipping.

use std::process::{Command, Stdio};

use crate::containerd::{run_with_deadline, CTR_DEADLINE};

/// The variable that makes a working CRIU a requirement.
pub const REQUIRE_CRIU: &str = "WREN_TESTS_CRIU";

/// `criu check`: `Err` with its error lines when CRIU cannot work on this host.
pub fn criu_check() -> Result<(), String> {
    let output = run_with_deadline(
        Command::new("criu").arg("check").stdin(Stdio::null()),
        CTR_DEADLINE,
    );
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
    // The "exited, status" lines are its helper processes' echo of the same failure.
    let errors: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains("exited, status"))
        .collect();
    Err(format!("criu check: {}", errors.join("; ")))
}

/// True when CRIU works. Otherwise prints `SKIP <test>: criu check fails on this kernel (…)`
/// and returns false, so the caller exercises the error path; with `WREN_TESTS_CRIU=1`
/// it panics instead.
pub fn criu_works(test: &str) -> bool {
    let Err(reason) = criu_check() else {
        return true;
    };
    let required = std::env::var(REQUIRE_CRIU).is_ok_and(|v| v == "1");
    assert!(!required, "{test}: {REQUIRE_CRIU}=1 but {reason}");
    eprintln!("SKIP {test}: criu check fails on this kernel ({reason})");
    false
}
