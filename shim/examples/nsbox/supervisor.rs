//! `containerd-shim-nsbox-v2 __init <bundle>`: the supervisor the daemon spawns
//! for each task, and whose pid containerd sees as the task's.
//!
//! Why a re-exec and not a `pre_exec` closure: between `fork` and `exec` in a multi-threaded
//! daemon only async-signal-safe calls are allowed, so no allocation, no spec parsing, no
//! error reporting. The daemon's `pre_exec` therefore makes one syscall, `unshare(2)` of the
//! spec's namespaces, and everything else happens here, in ordinary Rust after `exec`.
//!
//! Why the payload is a child of this process: `unshare(CLONE_NEWPID)` does not move the
//! caller, only its next child becomes pid 1 of the new namespace. The supervisor sets up
//! the mount namespace (private propagation, rootfs bind-mounted onto itself, `pivot_root`,
//! old root lazily unmounted) and the hostname, then forks the payload, which mounts a
//! `/proc` of its own pid namespace, drops to the spec's uid/gid and execs `process.args`,
//! so that it is pid 1 exactly as under runc (`echo $$` prints 1). The supervisor stays
//! outside that pid namespace: it forwards signals to the payload, reaps it, and exits with
//! its status (128 + signal when killed), which is what the daemon reports.
//! Orphans inside the namespace are the payload's to reap, as its pid 1.

use std::ffi::{c_int, OsString};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, pivot_root, Pid};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
use signal_hook::iterator::Signals;

use crate::spec::{self, Plan, SpecError};

/// argv\[1\] that selects this mode.
pub const MODE: &str = "__init";

/// The exit status when the payload never ran, as a shell's "command not found".
const SETUP_FAILED: u8 = 127;

/// Signals passed on to the payload. SIGKILL cannot be caught: it kills the supervisor,
/// and the payload follows through its parent-death signal.
const FORWARDED: [c_int; 7] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH];

/// The host devices bind-mounted into the container's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error("usage: {MODE} <bundle>")]
    Usage,
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("failed to set the hostname")]
    Hostname(#[source] io::Error),
    #[error("failed to {step}")]
    Mount {
        step: &'static str,
        source: nix::Error,
    },
    #[error("failed to install signal handlers")]
    Signals(#[source] io::Error),
    #[error("failed to run {program}")]
    Spawn { program: String, source: io::Error },
    #[error("failed to wait for the payload")]
    Wait(#[source] nix::Error),
}

/// Runs the supervisor; `args` are the arguments after [`MODE`].
///
/// Errors go to stderr, which is the container's stderr FIFO: `ctr run` shows them.
pub fn run(args: impl Iterator<Item = OsString>) -> ExitCode {
    match supervise(args) {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            eprintln!("nsbox: {}", wren_shim::status::error_chain(&error));
            ExitCode::from(SETUP_FAILED)
        }
    }
}

fn supervise(mut args: impl Iterator<Item = OsString>) -> Result<u8, InitError> {
    let bundle = PathBuf::from(args.next().ok_or(InitError::Usage)?);
    let plan = spec::load(&bundle)?;
    if let Some(hostname) = &plan.hostname {
        set_hostname(hostname)?;
    }
    enter_rootfs(&plan.rootfs)?;
    // Handlers before the fork: neither a signal to forward nor the payload's SIGCHLD may be
    // lost between the fork and the loop below.
    let signals = Signals::new(FORWARDED.iter().chain([&SIGCHLD])).map_err(InitError::Signals)?;
    let payload = spawn_payload(&plan)?;
    let pid = Pid::from_raw(i32::try_from(payload.id()).unwrap_or(i32::MAX));
    // Dropped without waiting: this process reaps with waitpid, not through Child.
    drop(payload);
    supervise_payload(signals, pid)
}

fn set_hostname(hostname: &str) -> Result<(), InitError> {
    // SAFETY: the pointer and length describe `hostname`'s bytes, alive for the call;
    // sethostname(2) only reads them and needs no terminating NUL.
    let result = unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) };
    if result != 0 {
        return Err(InitError::Hostname(io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes `rootfs` this mount namespace's root and detaches the host's tree from it.
fn enter_rootfs(rootfs: &Path) -> Result<(), InitError> {
    let step = |step| move |source| InitError::Mount { step, source };
    // Nothing mounted or unmounted from here on may propagate back to the host.
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(step("make / private"))?;
    // pivot_root needs the new root to be a mount point.
    let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(rootfs), rootfs, None::<&str>, bind, None::<&str>)
        .map_err(step("bind-mount the rootfs"))?;
    populate_dev(&rootfs.join("dev"))?;
    chdir(rootfs).map_err(step("enter the rootfs"))?;
    // pivot_root(".", ".") stacks the old root on top of the new one at "/": one lazy unmount
    // then drops it with everything the host had mounted, and the image needs no put_old dir.
    pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("unmount the old root"))?;
    chdir("/").map_err(step("enter the new root"))
}

/// A minimal `/dev`, while the host's is still reachable: a tmpfs holding bind mounts of
/// the harmless character devices programs take for granted (a shell backgrounding a job
/// opens /dev/null). runc makes the same set from the spec's mounts and default devices.
fn populate_dev(dev: &Path) -> Result<(), InitError> {
    let step = |step| move |source| InitError::Mount { step, source };
    std::fs::create_dir_all(dev).map_err(|error| InitError::Mount {
        step: "create /dev",
        source: nix::Error::from_raw(error.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let tmpfs = Some("mode=755,size=65536k");
    mount(Some("tmpfs"), dev, Some("tmpfs"), MsFlags::MS_NOSUID, tmpfs)
        .map_err(step("mount a tmpfs on /dev"))?;
    for device in DEVICES {
        let target = dev.join(device);
        // A bind mount needs an existing file to cover; the tmpfs is empty and ours.
        let _ = std::fs::File::create(&target);
        let host = Path::new("/dev").join(device);
        mount(
            Some(&host),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(step("bind-mount a device"))?;
    }
    Ok(())
}

fn spawn_payload(plan: &Plan) -> Result<Child, InitError> {
    let mut command = Command::new(&plan.args[0]);
    command
        .args(&plan.args[1..])
        .env_clear()
        .envs(plan.env.iter().map(|(key, value)| (key, value)))
        .current_dir(&plan.cwd);
    // stdio is inherited: the stdin pipe and the output FIFOs the daemon gave this process.
    let (uid, gid, groups) = (plan.uid, plan.gid, plan.additional_gids.clone());
    // SAFETY: the closure runs in the forked child before exec and only makes the raw
    // syscalls of `become_payload`, all async-signal-safe; it allocates nothing (`groups`
    // was built before the fork) and takes no lock.
    unsafe { command.pre_exec(move || become_payload(uid, gid, &groups)) };
    command.spawn().map_err(|source| InitError::Spawn {
        program: plan.args[0].clone(),
        source,
    })
}

/// In the child, before exec: die with the supervisor, mount `/proc` (only a process inside
/// the new pid namespace gets a procfs showing it), then drop to the spec's user.
///
/// The parent-death signal is armed after the fork: a supervisor SIGKILLed in between
/// leaves the payload running. The window is a few syscalls wide; an example accepts it.
fn become_payload(uid: u32, gid: u32, groups: &[libc::gid_t]) -> io::Result<()> {
    let check = |result: c_int| match result {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    };
    let sigkill = libc::c_ulong::try_from(libc::SIGKILL).unwrap_or_default();
    let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a plain integer; the mount(2) strings are static
    // NUL-terminated literals and the data pointer may be null for procfs; `groups` is a
    // live slice whose pointer and length match. None of these calls touches other memory.
    unsafe {
        check(libc::prctl(libc::PR_SET_PDEATHSIG, sigkill))?;
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            proc_flags,
            std::ptr::null(),
        ))?;
        check(libc::setgroups(groups.len(), groups.as_ptr()))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))
    }
}

/// Forwards signals to the payload until it exits; returns its exit code, or 128 + the
/// signal that killed it.
///
/// All on this thread: after `unshare(CLONE_NEWPID)` the kernel refuses to create threads
/// (clone with CLONE_THREAD fails with EINVAL), so there is no forwarding thread.
fn supervise_payload(mut signals: Signals, payload: Pid) -> Result<u8, InitError> {
    if let Some(status) = exit_status(payload)? {
        return Ok(status);
    }
    for signal in signals.forever() {
        if signal == SIGCHLD {
            if let Some(status) = exit_status(payload)? {
                return Ok(status);
            }
        } else if let Ok(signal) = Signal::try_from(signal) {
            // ESRCH if the payload just exited: its SIGCHLD is next.
            let _ = kill(payload, signal);
        }
    }
    // forever() only ends if the handlers were removed, which nothing here does.
    Err(InitError::Wait(Errno::ECHILD))
}

/// The payload's status if it has exited, without blocking.
fn exit_status(payload: Pid) -> Result<Option<u8>, InitError> {
    let status = loop {
        match waitpid(payload, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, signal, _)) => break 128 + signal as i32,
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(InitError::Wait(errno)),
        }
    };
    Ok(Some(u8::try_from(status).unwrap_or(u8::MAX)))
}
