//! Leak checks (open fds, live processes) and paths to the workspace's own binaries.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::containerd::STATE_DEADLINE;

/// Polls `find` until it finds nothing left, for at most [`STATE_DEADLINE`]; panics with
/// what it last found and the end of `daemon`'s log (`log`) otherwise.
///
/// Shims exit asynchronously after their last container is deleted, so leaks are polled for
/// rather than sampled once.
pub(crate) fn assert_none_left(
    daemon: &str,
    find: impl Fn() -> Vec<String>,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + STATE_DEADLINE;
    loop {
        let leaks = find();
        if leaks.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leaks after the test:\n  {}\n--- {daemon} log ---\n{}",
            leaks.join("\n  "),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// The path of a binary built from this workspace (`target/<profile>/<name>`).
///
/// Integration tests of one package cannot ask cargo for another package's binaries,
/// so the test command builds them first (`cargo build --workspace --bins`); this
/// panics with that advice when the binary is missing.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A live (not zombie) process seen in `/proc`.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// Its PID.
    pub pid: libc::pid_t,
    /// Its command line.
    pub argv: Vec<String>,
    /// Its environment (`NAME=value`).
    pub environ: Vec<String>,
}

/// Every live process on the host. Zombies are left out: this VM's PID 1 does not reap
/// orphans, so exited daemons stay as zombies of PID 1 that nobody here can clean up.
pub fn live_processes() -> Vec<ProcInfo> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            entry
                .ok()?
                .file_name()
                .to_str()?
                .parse::<libc::pid_t>()
                .ok()
        })
        .filter(|pid| !is_zombie(*pid))
        .filter_map(|pid| {
            let argv = nul_separated(&fs::read(format!("/proc/{pid}/cmdline")).ok()?);
            let environ =
                nul_separated(&fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
            Some(ProcInfo { pid, argv, environ })
        })
        .collect()
}

/// Whether `pid` is gone or a zombie (an exited process nobody has reaped yet).
pub fn is_zombie(pid: libc::pid_t) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the parenthesised command name, which may itself hold spaces.
    stat.rsplit_once(')')
        .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
}

/// The NUL-separated strings of a `/proc/<pid>/{cmdline,environ}` file.
fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}
