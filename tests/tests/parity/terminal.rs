//! `ctr run -t` and `ctr task exec -t` on a real pseudo-terminal: the shell in the container
//! reads what is typed, sees the terminal's size and its resize, and its exit code comes back.

use std::time::{Duration, Instant};

use wren_tests::containerd::STATE_DEADLINE;
use wren_tests::{Containerd, Runtime};

use crate::exec::{exec_command, exec_is_listed, wait_for_exec};
use crate::pty::Terminal;

pub fn run_tty_is_interactive(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("tty-run");
    let mut run = cd.run_command(&["--rm", "-t"], &id, &["sh"]);
    let mut terminal = Terminal::spawn(&mut run, 40, 100);
    // ctr puts its terminal in raw mode before it creates the task: typing can start now.
    cd.wait_for_status(&id, "RUNNING");
    converse(&mut terminal);
    assert_eq!(terminal.exit_code(), Some(3), "ctr run -t exit code");
    cd.assert_no_leaks();
}

pub fn exec_tty_is_interactive(rt: Runtime) {
    let cd = Containerd::start(rt);
    let id = cd.new_id("tty-exec");
    cd.run_detached(&[], &id, &["sleep", "1000"]);
    let mut exec = exec_command(&cd, &["-t"], "shell", &id, &["sh"]);
    let mut terminal = Terminal::spawn(&mut exec, 40, 100);
    wait_for_exec(&cd, &id, "shell");
    converse(&mut terminal);
    assert_eq!(terminal.exit_code(), Some(3), "ctr task exec -t exit code");
    assert!(!exec_is_listed(&cd, &id, "shell"), "the exec must be gone");
    cd.kill_and_remove(&id);
    cd.assert_no_leaks();
}

/// The shell computes something, reports the terminal's size before and after a resize of
/// the test's terminal (ctr turns SIGWINCH into a ResizePty), then exits 3.
fn converse(terminal: &mut Terminal) {
    // The echo of the typed line shows `$((6*7))`; only the shell prints `marker-42`.
    terminal.type_text("echo marker-$((6*7))\n");
    terminal.expect("marker-42");
    // ctr sends its first ResizePty only after the task started, so a shell quick enough
    // can still see 0 0: ask until the size arrives.
    show_size_until(terminal, "40 100");
    terminal.resize(50, 120);
    show_size_until(terminal, "50 120");
    terminal.type_text("exit 3\n");
}

/// Types `stty size` until the shell prints `expected` (bounded).
fn show_size_until(terminal: &mut Terminal, expected: &str) {
    let deadline = Instant::now() + STATE_DEADLINE;
    loop {
        terminal.type_text("stty size\n");
        if terminal.wait_for(expected, Duration::from_millis(500)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the shell never saw size {expected:?}:\n{}",
            terminal.screen()
        );
    }
}
