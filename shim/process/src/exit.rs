//! The exit record every spawner reports.

use std::fmt;
use std::time::SystemTime;

/// One reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The pid that exited.
    pub pid: i32,
    /// The exit code, or 128 + the signal number if a signal killed it (containerd's
    /// convention, and the shell's).
    pub status: i32,
    /// When it was reaped.
    pub at: SystemTime,
}

impl Exit {
    /// The exit of `pid` from a raw `wait(2)` status; `None` for stop and continue reports,
    /// which do not end a process.
    pub fn from_wait_status(pid: i32, raw: i32) -> Option<Self> {
        let status = if libc::WIFEXITED(raw) {
            libc::WEXITSTATUS(raw)
        } else if libc::WIFSIGNALED(raw) {
            128 + libc::WTERMSIG(raw)
        } else {
            return None;
        };
        Some(Self {
            pid,
            status,
            at: SystemTime::now(),
        })
    }

    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}", self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_decoding_matches_the_kernel_layout() {
        // exit(2) stores the code in bits 8..16; a fatal signal in bits 0..7.
        assert_eq!(Exit::from_wait_status(1, 0x0100).unwrap().status, 1);
        assert_eq!(Exit::from_wait_status(1, 15).unwrap().status, 128 + 15);
        // 0x137f: stopped by SIGSTOP (19), not an end of life.
        assert_eq!(Exit::from_wait_status(1, 0x137f), None);
    }
}
