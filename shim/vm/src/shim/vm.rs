//! One microVM: its directory, the QEMU process, and the ttrpc client to its agent.
//!
//! Layout of a VM's directory (`<run dir>/<key>`, 0700, removed when the VM stops):
//! - `agent.sock` (0600): the shim listens, QEMU's virtio-serial chardev connects;
//! - `share/`: the 9p export; container `<id>`'s rootfs is bind-mounted on `share/<id>`;
//! - `console.log`, `qemu.log`: the guest's serial console and QEMU's own messages;
//! - `qemu.pid`: for the `delete` action, should the shim die before the VM.

use std::fs::File;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use wren_shim::{ExitWaiter, Monitor};
use wren_shim_protocol::vm_agent::{AgentClient, Empty};

use crate::config::Config;
use crate::initramfs::{self, InitramfsError};

/// How long each boot but the last may take, from QEMU's start to the agent's first answer,
/// before it is torn down for another: under TCG a boot now and then hangs (cause not found;
/// see the guide's limits), while a good one answers in about 7 s on a busy 2-CPU machine.
const RETRIED_BOOT_TIMEOUTS: [Duration; 2] = [Duration::from_secs(20), Duration::from_secs(30)];
/// How long the last boot may take.
const LAST_BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long QEMU may take to connect to the agent socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a powered-off guest's QEMU may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// The QEMU pid file in a VM's directory.
pub const PID_FILE: &str = "qemu.pid";

/// A VM that would not come up.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// No configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// No initramfs.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// A file system step failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A mount failed.
    #[error("bind {source_path} on {target}: {source}")]
    Bind {
        /// The rootfs.
        source_path: PathBuf,
        /// The share entry.
        target: PathBuf,
        /// The cause.
        source: nix::Error,
    },
    /// QEMU could not be started.
    #[error("start {qemu}: {source}")]
    Spawn {
        /// The binary.
        qemu: PathBuf,
        /// The cause.
        source: wren_shim::SpawnError,
    },
    /// QEMU exited while booting.
    #[error("QEMU exited with status {status} while booting: {log}")]
    Exited {
        /// Its status.
        status: i32,
        /// The end of its logs.
        log: String,
    },
    /// The guest did not answer in time.
    #[error("the guest agent did not answer within {0:?}; the console's last lines: {1}")]
    Timeout(Duration, String),
    /// The agent connection failed.
    #[error("agent connection: {0}")]
    Agent(#[source] ttrpc::Error),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmError {
    let path = path.to_owned();
    move |source| VmError::Io { what, path, source }
}

/// A running VM.
pub struct Vm {
    dir: PathBuf,
    share: PathBuf,
    pid: u32,
    waiter: ExitWaiter,
    agent: Arc<AgentClient>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The generated agent client has no Debug.
        f.debug_struct("Vm")
            .field("dir", &self.dir)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Boots a VM, and boots again after a boot that hangs: up to three boots, each given
    /// longer than the one before.
    pub fn boot_with_retries(
        config: &Config,
        monitor: &Monitor,
        key: &str,
    ) -> Result<Self, VmError> {
        for timeout in RETRIED_BOOT_TIMEOUTS {
            match Self::boot(config, monitor, key, timeout) {
                Err(VmError::Timeout(after, console)) => {
                    log::warn!("no answer from the guest in {after:?} ({console}); booting again");
                }
                booted => return booted,
            }
        }
        Self::boot(config, monitor, key, LAST_BOOT_TIMEOUT)
    }

    /// Boots a VM in `<run dir>/<key>` and waits for its agent, which must answer within
    /// `boot_timeout` of QEMU's start.
    fn boot(
        config: &Config,
        monitor: &Monitor,
        key: &str,
        boot_timeout: Duration,
    ) -> Result<Self, VmError> {
        let image = initramfs::ensure(config, Some(monitor))?;
        let dir = prepare_dir(&config.run_dir, key)?;
        let share = dir.join("share");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&share)
            .map_err(io_error("create", &share))?;
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).map_err(io_error("bind", &socket))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_error("chmod", &socket))?;
        let mut command = qemu_command(config, &dir, &share, &socket, &image)?;
        let (child, waiter) = monitor
            .spawn(&mut command)
            .map_err(|source| VmError::Spawn {
                qemu: config.qemu.clone(),
                source,
            })?;
        drop(command);
        let pid = child.id();
        drop(child);
        let _ = std::fs::write(dir.join(PID_FILE), pid.to_string());
        let mut vm_guard = BootGuard {
            dir: Some(dir.clone()),
            pid,
            waiter: &waiter,
        };
        let stream = accept(&listener, &waiter, &dir)?;
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        let client = ttrpc::Client::new(stream.into_raw_fd()).map_err(VmError::Agent)?;
        let agent = Arc::new(AgentClient::new(client));
        // One Ping: it sits in the socket until the guest opens its port, and is answered
        // as soon as the agent serves.
        let started = Instant::now();
        let timeout = i64::try_from(boot_timeout.as_nanos()).unwrap_or(i64::MAX);
        match agent.ping(ttrpc::context::with_timeout(timeout), &Empty::new()) {
            Ok(_) => {}
            Err(ttrpc::Error::Others(_) | ttrpc::Error::LocalClosed)
                if waiter.try_wait().is_some() =>
            {
                return Err(exited(&waiter, &dir));
            }
            Err(error) if started.elapsed() >= boot_timeout => {
                log::warn!("boot ping: {error}");
                return Err(VmError::Timeout(boot_timeout, console_tail(&dir)));
            }
            Err(error) => return Err(VmError::Agent(error)),
        }
        log::info!(
            "VM {} (QEMU pid {pid}) up in {:?}",
            dir.display(),
            started.elapsed()
        );
        vm_guard.dir = None;
        drop(vm_guard);
        Ok(Self {
            dir,
            share,
            pid,
            waiter,
            agent,
        })
    }

    /// The agent's client.
    pub fn agent(&self) -> &Arc<AgentClient> {
        &self.agent
    }

    /// The VM's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `rootfs` the guest's `/run/share/<id>`: a bind mount under the 9p export.
    pub fn share_rootfs(&self, id: &str, rootfs: &Path) -> Result<(), VmError> {
        let target = self.share.join(id);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&target)
            .map_err(io_error("create", &target))?;
        mount(
            Some(rootfs),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|source| {
            let _ = std::fs::remove_dir(&target);
            VmError::Bind {
                source_path: rootfs.to_owned(),
                target: target.clone(),
                source,
            }
        })
    }

    /// Undoes [`Vm::share_rootfs`]; idempotent.
    pub fn unshare_rootfs(&self, id: &str) {
        let target = self.share.join(id);
        unmount_under(&target);
        let _ = std::fs::remove_dir(&target);
    }

    /// Powers the guest off (QEMU exits), kills QEMU if it lingers, and removes the
    /// VM's directory.
    pub fn stop(&self) {
        if self.waiter.try_wait().is_none() {
            let timeout = i64::try_from(Duration::from_secs(2).as_nanos()).unwrap_or(i64::MAX);
            // The guest powers off after answering; the answer may be lost with it.
            let _ = self
                .agent
                .shutdown(ttrpc::context::with_timeout(timeout), &Empty::new());
            if self.waiter.wait_timeout(STOP_TIMEOUT).is_none() {
                log::warn!("QEMU {} did not exit after power-off: killing it", self.pid);
                kill(self.pid);
                let _ = self.waiter.wait_timeout(STOP_TIMEOUT);
            }
        }
        remove_dir(&self.dir);
    }
}

/// Kills QEMU and removes the directory if boot fails half-way.
struct BootGuard<'a> {
    dir: Option<PathBuf>,
    pid: u32,
    waiter: &'a ExitWaiter,
}

impl Drop for BootGuard<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            kill(self.pid);
            let _ = self.waiter.wait_timeout(STOP_TIMEOUT);
            remove_dir(&dir);
        }
    }
}

fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The end of the guest console and QEMU's log: the directory goes with a failed boot.
fn console_tail(dir: &Path) -> String {
    let mut text = String::new();
    for name in ["console.log", "qemu.log"] {
        let log = std::fs::read(dir.join(name)).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(600)..];
        text.push_str(&format!(
            "[{name}] {}",
            String::from_utf8_lossy(tail).trim()
        ));
        text.push(' ');
    }
    text
}

fn exited(waiter: &ExitWaiter, dir: &Path) -> VmError {
    VmError::Exited {
        status: waiter.try_wait().map_or(-1, |exit| exit.status),
        log: console_tail(dir),
    }
}

/// `<run dir>/<key>`, fresh and 0700 (a stale one from a dead shim is cleared first).
fn prepare_dir(run_dir: &Path, key: &str) -> Result<PathBuf, VmError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run_dir)
        .map_err(io_error("create", run_dir))?;
    let dir = run_dir.join(key);
    if dir.exists() {
        remove_dir(&dir);
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io_error("create", &dir))?;
    Ok(dir)
}

/// Unmounts every mount at or under `dir`, then removes it. Never removes through a mount:
/// the share holds containers' rootfs.
pub fn remove_dir(dir: &Path) {
    unmount_under(dir);
    if mounts_under(dir).is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        log::warn!("{} still has mounts: left in place", dir.display());
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
        .filter(|point| point == &prefix || point.starts_with(&format!("{prefix}/")))
        .collect()
}

fn unmount_under(dir: &Path) {
    // Deepest first; MNT_DETACH so a busy mount cannot keep the VM's directory alive.
    let mut points = mounts_under(dir);
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = umount2(point.as_str(), MntFlags::MNT_DETACH);
    }
}

fn qemu_command(
    config: &Config,
    dir: &Path,
    share: &Path,
    socket: &Path,
    image: &Path,
) -> Result<Command, VmError> {
    let log_path = dir.join("qemu.log");
    let log = File::create(&log_path).map_err(io_error("create", &log_path))?;
    let log_err = log.try_clone().map_err(io_error("dup", &log_path))?;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    // Commas separate QEMU's option fields: paths with one are refused by the id check
    // (containerd's identifier rule has none) and the run dir is ours.
    let mut command = Command::new(&config.qemu);
    command
        .args(["-M", "microvm,pcie=on,acpi=on"])
        // TCG's translation cache keeps its default size: with `tb-size=32` (and 128 MiB
        // guests) boots hung before the kernel's first message when two VMs started at once.
        .args(["-accel", if config.kvm { "kvm" } else { "tcg" }])
        .args(["-m", &format!("{}M", config.memory_mb)])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-kernel", &path(&config.kernel), "-initrd", &path(image)])
        // panic=-1 + -no-reboot: a guest panic ends QEMU instead of hanging it.
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .args([
            "-serial",
            &format!("file:{}", path(&dir.join("console.log"))),
        ])
        .args([
            "-fsdev",
            &format!(
                "local,id=share,path={},security_model=passthrough,multidevs=remap",
                path(share)
            ),
            "-device",
            "virtio-9p-pci,fsdev=share,mount_tag=wrenvm",
        ])
        .args(["-device", "virtio-serial-pci,id=serial"])
        .args([
            "-chardev",
            &format!("socket,id=agent,path={}", path(socket)),
        ])
        .args([
            "-device",
            "virtserialport,bus=serial.0,chardev=agent,name=wren.agent",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    Ok(command)
}

/// Waits for QEMU to connect to the agent socket.
fn accept(
    listener: &UnixListener,
    waiter: &ExitWaiter,
    dir: &Path,
) -> Result<std::os::unix::net::UnixStream, VmError> {
    listener
        .set_nonblocking(true)
        .map_err(io_error("configure", dir))?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(io_error("configure", dir))?;
                return Ok(stream);
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(io_error("accept on", dir)(error)),
        }
        if waiter.try_wait().is_some() {
            return Err(exited(waiter, dir));
        }
        if Instant::now() > deadline {
            return Err(VmError::Timeout(CONNECT_TIMEOUT, console_tail(dir)));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
