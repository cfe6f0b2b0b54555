//! Starting one process in a container: the fork/exec half.
//!
//! Everything that must happen in the child is done in `pre_exec` with raw syscalls on
//! values prepared before the fork (the agent is multi-threaded, so the child may only make
//! async-signal-safe calls): join the container's cgroup, a new session and uts namespace,
//! chroot into the container's root, chdir, drop to the spec's groups and user. std's own
//! uid/gid/cwd handling cannot be used: it runs before `pre_exec`, i.e. before the chroot.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use wren_shim_protocol::vm_agent::ProcessSpec;

/// A spawned process: its pid and the host-facing ends of its stdio pipes.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
}

/// Why a process could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The spec has no argv.
    #[error("the process has no args")]
    NoArgs,
    /// A string held a NUL byte.
    #[error("a path or argument holds a NUL byte")]
    Nul,
    /// `args[0]` is not found on the container's PATH.
    #[error("executable {0:?} not found in the container's PATH")]
    NotFound(String),
    /// fork/exec failed.
    #[error("spawn {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Spawns `spec` inside `root`, in cgroup `cgroup` (a directory of the guest's cgroup2).
pub fn spawn(
    root: &Path,
    cgroup: &Path,
    hostname: &str,
    spec: &ProcessSpec,
) -> Result<Spawned, SpawnError> {
    let arg0 = spec.args.first().ok_or(SpawnError::NoArgs)?;
    let env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let program = resolve(root, arg0, &env)?;
    let setup = ChildSetup::new(root, cgroup, hostname, spec)?;
    let mut command = Command::new(&program);
    command
        .arg0(arg0)
        .args(&spec.args[1..])
        .env_clear()
        .envs(env)
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    setup.install(&mut command);
    let mut child = command.spawn().map_err(|source| SpawnError::Spawn {
        program: program.clone(),
        source,
    })?;
    // Never waited on through `Child`: the agent's reaper takes every exit.
    let stdin = child
        .stdin
        .take()
        .map(|pipe| File::from(std::os::fd::OwnedFd::from(pipe)));
    let stdout = child
        .stdout
        .take()
        .map(|pipe| File::from(std::os::fd::OwnedFd::from(pipe)));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| File::from(std::os::fd::OwnedFd::from(pipe)));
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        // Piped above, so always present.
        return Err(SpawnError::Spawn {
            program,
            source: std::io::Error::other("no stdio pipes"),
        });
    };
    Ok(Spawned {
        pid: child.id(),
        stdin,
        stdout,
        stderr,
    })
}

/// What the child does between fork and exec, prepared before the fork.
struct ChildSetup {
    root: CString,
    cwd: CString,
    procs: CString,
    hostname: Vec<u8>,
    groups: Vec<libc::gid_t>,
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl ChildSetup {
    fn new(
        root: &Path,
        cgroup: &Path,
        hostname: &str,
        spec: &ProcessSpec,
    ) -> Result<Self, SpawnError> {
        let cstr = |bytes: &[u8]| CString::new(bytes).map_err(|_| SpawnError::Nul);
        Ok(Self {
            root: cstr(root.as_os_str().as_bytes())?,
            cwd: cstr(if spec.cwd.is_empty() {
                b"/"
            } else {
                spec.cwd.as_bytes()
            })?,
            procs: cstr(cgroup.join("cgroup.procs").as_os_str().as_bytes())?,
            hostname: hostname.as_bytes().to_vec(),
            groups: spec.additional_gids.clone(),
            uid: spec.uid,
            gid: spec.gid,
        })
    }

    fn install(self, command: &mut Command) {
        let Self {
            root,
            cwd,
            procs,
            hostname,
            groups,
            uid,
            gid,
        } = self;
        // SAFETY: the closure runs in the forked child before exec. It only makes
        // async-signal-safe syscalls (open, write, close, setsid, unshare, sethostname, chroot,
        // chdir, setgroups, setgid, setuid) on buffers built before the fork, allocates nothing
        // and takes no lock.
        unsafe {
            command.pre_exec(move || {
                let check = |result: libc::c_int| {
                    if result == -1 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                };
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(fd)?;
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                check(libc::setsid())?;
                if !hostname.is_empty() {
                    check(libc::unshare(libc::CLONE_NEWUTS))?;
                    check(libc::sethostname(hostname.as_ptr().cast(), hostname.len()))?;
                }
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(cwd.as_ptr()))?;
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))
            });
        }
    }
}

/// `arg0` as a path inside the container: as is if it holds a slash, else the first hit on
/// the spec's PATH, looked up under `root` (std would search the agent's own root).
fn resolve(root: &Path, arg0: &str, env: &[(&str, &str)]) -> Result<String, SpawnError> {
    if arg0.contains('/') {
        return Ok(arg0.to_owned());
    }
    let path = env.iter().rev().find(|(key, _)| *key == "PATH").map_or(
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        |(_, v)| v,
    );
    for dir in path.split(':').filter(|dir| dir.starts_with('/')) {
        let candidate = format!("{}/{arg0}", dir.trim_end_matches('/'));
        let on_host = root.join(OsStr::new(candidate.trim_start_matches('/')));
        // symlink_metadata: an absolute symlink points inside the container, not here.
        if std::fs::symlink_metadata(on_host).is_ok() {
            return Ok(candidate);
        }
    }
    Err(SpawnError::NotFound(arg0.to_owned()))
}
