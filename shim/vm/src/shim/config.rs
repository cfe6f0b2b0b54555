//! Where the VM's pieces come from: each has a default that works on a Debian host with
//! `qemu-system-x86` and `linux-image-amd64` installed, and an environment override (the
//! shim inherits containerd's environment, so set them in containerd's unit).
//!
//! | variable | default |
//! |---|---|
//! | `WRENVM_KERNEL` | the newest `/boot/vmlinuz-*` with modules, not `*cloud*` |
//! | `WRENVM_QEMU` | `qemu-system-x86_64` on `PATH` |
//! | `WRENVM_ACCEL` | `tcg` (KVM hangs at boot under nested virtualisation; `kvm` asks for it) |
//! | `WRENVM_MEMORY_MB` | 256 |
//! | `WRENVM_AGENT` | `wrenvm-agent` next to the shim binary |
//! | `WRENVM_RUN_DIR` | `/run/wrenvm` (one 0700 directory per VM) |
//! | `WRENVM_CACHE_DIR` | `/var/cache/wrenvm` (the built initramfs images) |

use std::path::{Path, PathBuf};

/// A missing piece.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No kernel.
    #[error("no kernel: set WRENVM_KERNEL or install linux-image-amd64 (a /boot/vmlinuz-* with /lib/modules/<version>)")]
    NoKernel,
    /// No agent.
    #[error(
        "the guest agent {0} is missing: build wren-shim-vm's wrenvm-agent, or set WRENVM_AGENT"
    )]
    NoAgent(PathBuf),
    /// A bad number.
    #[error("WRENVM_MEMORY_MB={0:?} is not a number of MiB between 64 and 65536")]
    Memory(String),
}

/// The host side of one VM's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The kernel image.
    pub kernel: PathBuf,
    /// Its release (`6.1.0-57-amd64`): names `/lib/modules/<release>`.
    pub release: String,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Whether to ask for KVM.
    pub kvm: bool,
    /// Guest memory, MiB.
    pub memory_mb: u32,
    /// The guest agent binary.
    pub agent: PathBuf,
    /// Parent of the per-VM directories.
    pub run_dir: PathBuf,
    /// Where initramfs images are cached.
    pub cache_dir: PathBuf,
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

impl Config {
    /// Reads the environment and checks that the kernel and agent exist.
    pub fn from_env() -> Result<Self, ConfigError> {
        let kernel = env_path("WRENVM_KERNEL")
            .or_else(pick_kernel)
            .ok_or(ConfigError::NoKernel)?;
        let release = release_of(&kernel).ok_or(ConfigError::NoKernel)?;
        let agent = env_path("WRENVM_AGENT").unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join("wrenvm-agent")))
                .unwrap_or_default()
        });
        if !agent.is_file() {
            return Err(ConfigError::NoAgent(agent));
        }
        let memory = std::env::var("WRENVM_MEMORY_MB").unwrap_or_else(|_| "256".into());
        let memory_mb = memory
            .parse()
            .ok()
            .filter(|mb| (64..=65536).contains(mb))
            .ok_or(ConfigError::Memory(memory))?;
        Ok(Self {
            kernel,
            release,
            qemu: env_path("WRENVM_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into()),
            kvm: std::env::var("WRENVM_ACCEL").is_ok_and(|accel| accel == "kvm"),
            memory_mb,
            agent,
            run_dir: env_path("WRENVM_RUN_DIR").unwrap_or_else(|| "/run/wrenvm".into()),
            cache_dir: env_path("WRENVM_CACHE_DIR").unwrap_or_else(|| "/var/cache/wrenvm".into()),
        })
    }
}

/// The newest generic kernel in /boot whose modules are installed: the cloud flavour lacks
/// the 9p modules.
pub fn pick_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("vmlinuz-") && !name.contains("cloud"))
        })
        .filter(|path| {
            release_of(path).is_some_and(|release| {
                Path::new("/lib/modules")
                    .join(release)
                    .join("modules.dep")
                    .is_file()
            })
        })
        .map(|path| (version_key(&path), path))
        .collect();
    kernels.sort();
    kernels.pop().map(|(_, path)| path)
}

/// `vmlinuz-<release>` -> `<release>`.
fn release_of(kernel: &Path) -> Option<String> {
    let name = kernel.file_name()?.to_str()?;
    name.strip_prefix("vmlinuz-")
        .filter(|release| !release.is_empty() && !release.contains('/'))
        .map(str::to_owned)
}

/// The numbers in a kernel's name, for a version sort (`sort -V`'s idea, simply).
fn version_key(path: &Path) -> Vec<u64> {
    path.to_string_lossy()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert!(
            version_key(Path::new("/boot/vmlinuz-6.1.0-9-amd64"))
                < version_key(Path::new("/boot/vmlinuz-6.1.0-57-amd64"))
        );
        assert_eq!(
            release_of(Path::new("/boot/vmlinuz-6.1.0-57-amd64")).as_deref(),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(release_of(Path::new("/boot/vmlinuz-")), None);
    }
}
