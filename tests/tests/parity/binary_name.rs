//! The runc options' `BinaryName`: a shim runs any runc-compatible CLI in place of runc
//! (how ctr passes it to each shim: `Containerd::binary_name_flags`).

use std::fs;
use std::process::{Output, Stdio};

use wren_tests::containerd::{output_text, run_with_deadline, CTR_DEADLINE};
use wren_tests::{Containerd, Runtime};

use crate::logging::write_executable;

/// crun's refusal of a cgroup v1 hybrid layout (a host limit, not a shim failure).
const CRUN_REFUSES_HYBRID: &str = "cgroups in hybrid mode not supported";

/// What Debian 12's crun (1.8) says to the newer OCI spec version ctr 2.x writes.
const CRUN_REFUSES_SPEC_VERSION: &str = "unknown version specified";

/// A wrapper that records each call and hands it to runc.
pub fn wrapper_script_as_binary_name(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("wrapped");
    let dir = cd.scratch("wrapper");
    let calls = dir.join(format!("{id}.calls"));
    let wrapper = dir.join("runc-wrapper.sh");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nexec runc \"$@\"\n",
        calls.display()
    );
    write_executable(&wrapper, &script);

    let output = run_with_binary(&cd, &id, &wrapper.display().to_string());
    assert_eq!(output.status.code(), Some(5), "{}", output_text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello from 5\n");
    let recorded = fs::read_to_string(&calls).unwrap_or_default();
    for verb in ["create", "start"] {
        assert!(
            recorded
                .lines()
                .any(|call| call.contains(&format!(" {verb} ")) && call.ends_with(id.as_str())),
            "no `{verb} … {id}` through the wrapper; calls:\n{recorded}"
        );
    }
    cd.assert_no_leaks();
}

/// crun in place of runc: it works, or (on a cgroup v1 hybrid host, or given a spec version
/// newer than it knows) refuses with a clear error that leaves nothing behind.
pub fn crun_as_binary_name(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("crun");
    let output = run_with_binary(&cd, &id, "crun");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let refusal = [
        (CRUN_REFUSES_HYBRID, "this host's hybrid cgroup layout"),
        (
            CRUN_REFUSES_SPEC_VERSION,
            "the OCI spec version of this ctr",
        ),
    ]
    .into_iter()
    .find(|(needle, _)| stderr.contains(needle));
    if let (false, Some((_, what))) = (output.status.success(), refusal) {
        crate::visible_skip(
            rt,
            "crun_as_binary_name",
            &format!("crun refuses {what}: {}", stderr.trim()),
        );
        cd.remove_container_record(&id);
    } else {
        assert_eq!(output.status.code(), Some(5), "{}", output_text(&output));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hello from 5\n");
    }
    cd.assert_no_leaks();
}

/// `ctr run --rm` of a container that prints and exits 5, with `binary` as the shim's runc.
fn run_with_binary(cd: &Containerd, id: &str, binary: &str) -> Output {
    let binary_flags = cd.binary_name_flags(id, binary);
    let mut flags = vec!["--rm"];
    flags.extend(binary_flags.iter().map(String::as_str));
    let script = "echo hello from 5; exit 5";
    let mut run = cd.run_command(&flags, id, &["sh", "-c", script]);
    run_with_deadline(run.stdin(Stdio::null()), CTR_DEADLINE)
}
