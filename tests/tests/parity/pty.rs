//! A pseudo-terminal for driving `ctr -t` the way a user at a terminal would: ctr's stdio is
//! the pty's slave (and its controlling terminal, so resizes reach it as SIGWINCH), the test
//! types on the master and reads what the screen would show.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, PtyMaster};

use wren_tests::containerd::STATE_DEADLINE;

/// The test's end of a pty whose slave runs a `ctr` command.
#[derive(Debug)]
pub struct Terminal {
    master: PtyMaster,
    child: Child,
    /// Chunks read from the master by a reader thread; closed when the slave is gone.
    output: Receiver<Vec<u8>>,
    /// Everything read so far, and how much of it earlier waits already matched.
    screen: String,
    matched: usize,
}

impl Terminal {
    /// Opens a pty sized `rows` x `cols` and spawns `cmd` on it as a session leader
    /// with the pty as its controlling terminal.
    pub fn spawn(cmd: &mut Command, rows: u16, cols: u16) -> Self {
        // Both ends are born CLOEXEC, so no child of another test thread inherits the slave
        // (which would keep the master from ever seeing the end of the output).
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("open a pty master");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let slave_path = ptsname_r(&master).expect("pty slave name");
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&slave_path)
            .expect("open the pty slave");
        set_window_size(&master, rows, cols);
        let child = spawn_on_slave(cmd, &slave);
        // Our copy of the slave goes now: the master reads EOF (EIO) once ctr has exited.
        drop(slave);
        let output = read_in_background(&master);
        Self {
            master,
            child,
            output,
            screen: String::new(),
            matched: 0,
        }
    }

    /// Resizes the terminal; the kernel sends SIGWINCH to ctr, its foreground process.
    pub fn resize(&self, rows: u16, cols: u16) {
        set_window_size(&self.master, rows, cols);
    }

    /// Types `text` on the terminal.
    pub fn type_text(&self, text: &str) {
        (&self.master)
            .write_all(text.as_bytes())
            .expect("write to the pty master");
    }

    /// Waits (bounded) until `needle` appears after the previous match; panics with the
    /// screen otherwise.
    pub fn expect(&mut self, needle: &str) {
        assert!(
            self.wait_for(needle, STATE_DEADLINE),
            "{needle:?} never appeared on the terminal:\n{}",
            self.screen
        );
    }

    /// Waits up to `patience` for `needle` after the previous match; true once it appeared.
    pub fn wait_for(&mut self, needle: &str, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(at) = self.screen[self.matched..].find(needle) {
                self.matched += at + needle.len();
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.screen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Waits (bounded) for ctr to exit and returns its exit code; kills it if it hangs.
    pub fn exit_code(mut self) -> Option<i32> {
        let deadline = Instant::now() + STATE_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait ctr") {
                return status.code();
            }
            if Instant::now() > deadline {
                // The child is ours and unreaped, so its PID cannot have been reused.
                self.child.kill().expect("kill hung ctr");
                self.child.wait().expect("reap hung ctr");
                panic!("ctr did not exit; terminal:\n{}", self.screen);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the terminal showed so far.
    pub fn screen(&self) -> &str {
        &self.screen
    }
}

impl Drop for Terminal {
    /// A test that failed before ctr exited must not leave it running.
    fn drop(&mut self) {
        // The child is ours and unreaped, so its PID cannot have been reused.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn set_window_size(master: &PtyMaster, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: the fd is a pty master we own for the duration of the call; TIOCSWINSZ only
    // reads the `winsize` behind the pointer, which lives on this stack frame.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0, "TIOCSWINSZ: {}", io::Error::last_os_error());
}

/// Spawns `cmd` with the slave as stdin, stdout and stderr, in a new session whose
/// controlling terminal is the slave: ctr's `-t` needs a terminal and listens for SIGWINCH.
fn spawn_on_slave(cmd: &mut Command, slave: &File) -> Child {
    let stdio = || slave.try_clone().expect("dup the pty slave");
    cmd.stdin(stdio()).stdout(stdio()).stderr(stdio());
    let make_controlling = || -> io::Result<()> {
        nix::unistd::setsid()?;
        // SAFETY: runs in the child between fork and exec, where fd 0 is already the pty
        // slave; TIOCSCTTY takes an integer argument and touches no memory. setsid(2) and
        // ioctl(2) are async-signal-safe and nothing here allocates.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only makes the two async-signal-safe syscalls above.
    unsafe { cmd.pre_exec(make_controlling) };
    let child = cmd.spawn().expect("spawn ctr on the pty");
    // The Command keeps the slave copies until it is dropped or reconfigured.
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    child
}

/// Copies what the master reads into a channel until the slave side is gone.
fn read_in_background(master: &PtyMaster) -> Receiver<Vec<u8>> {
    let mut reader = File::from(
        master
            .as_fd()
            .try_clone_to_owned()
            .expect("dup the pty master"),
    );
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("pty-reader".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO means every slave fd is closed: ctr has exited.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if sender.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        })
        .expect("spawn the pty reader");
    receiver
}
