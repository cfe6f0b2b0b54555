//! Shared helpers for wren-io's integration tests.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use wren_io::{Engine, IoConfig, IoOwner, PreparedIo, ProcessIo, RuncIo, Stdio};
use wren_process::DirectSpawner;

/// Tests in one binary share the fd table: each holds this lock for its whole run so the
/// before/after counts of `/proc/self/fd` see only its own descriptors.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the serialising lock and checks that the test closed every descriptor it opened;
/// also owns the test's scratch directory, removed (under the lock) before the check.
pub struct FdCheck {
    pub dir: tempfile::TempDir,
    before: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

impl FdCheck {
    pub fn begin() -> Self {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let before = fd_listing();
        Self {
            dir: tempfile::tempdir().unwrap(),
            before,
            _serial: serial,
        }
    }

    /// Asserts the descriptor count is back where it started.
    pub fn end(self) {
        self.dir.close().unwrap();
        assert_eq!(
            fd_listing(),
            self.before,
            "descriptors differ after the test"
        );
    }
}

/// `fd -> target` for every open descriptor except the one listing them.
fn fd_listing() -> Vec<String> {
    let mut listing: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some(format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .filter(|line| !line.contains("/fd"))
        .collect();
    listing.sort();
    listing
}

/// The test process's own uid/gid, so pipes can be chowned without root.
pub fn my_owner() -> IoOwner {
    IoOwner {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
    }
}

pub fn config(id: &str) -> IoConfig {
    let mut config = IoConfig::new(id, "wren-test");
    config.owner = my_owner();
    config
}

pub fn mkfifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
    path
}

/// Opens a FIFO for reading the way containerd's client does (non-blocking, so it
/// returns at once), then switches it to blocking reads for the test's convenience.
pub fn client_reader(path: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    set_blocking(&file);
    file
}

/// Opens a FIFO for writing without blocking (a reader must exist), then blocking writes.
pub fn client_writer(path: &Path) -> File {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    set_blocking(&file);
    file
}

fn set_blocking(file: &File) {
    let flags = OFlag::from_bits_retain(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL).unwrap());
    fcntl(
        file.as_raw_fd(),
        FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK),
    )
    .unwrap();
}

pub fn read_all(mut file: File) -> String {
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    text
}

/// Prepares IO for `stdio`, hands the runc ends to the caller, and starts copying.
pub fn start_io(engine: &Engine, stdio: &Stdio, id: &str) -> (ProcessIo, RuncIo) {
    let mut prepared = PreparedIo::new(stdio, &config(id), &DirectSpawner).unwrap();
    let runc = prepared.take_runc_io();
    let io = prepared
        .start(&engine.handle(), std::time::Duration::from_secs(5))
        .unwrap();
    (io, runc)
}

pub fn fd(file: OwnedFd) -> std::process::Stdio {
    file.into()
}

/// Resident memory of this process in KiB.
pub fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Threads of this process with the given name.
pub fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}
