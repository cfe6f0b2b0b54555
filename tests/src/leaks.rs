//! Leak checks and paths to the workspace's own binaries.

use std::path::PathBuf;

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
