//! Which containerd release a test runs: Debian 12's 1.6 (on `PATH`), or 1.7 or 2.1 as
//! `scripts/install-newer-deps.sh` unpacked them under `/opt/wren-deps` (or `$WREN_DEPS_DIR`).
//!
//! `WREN_CONTAINERD=1.7` (or `2.1`) switches a whole test run to that release: its
//! `containerd`, its `ctr` and its Go `containerd-shim-runc-v2`, the reference shim of that
//! release. Unset, the tests use 1.6.

use std::path::{Path, PathBuf};

/// The environment variable naming the release (`1.6`, `1.7`, `2.1`).
pub const VERSION_VAR: &str = "WREN_CONTAINERD";

/// Where the newer releases are unpacked, unless `WREN_DEPS_DIR` says otherwise.
const DEFAULT_DEPS_DIR: &str = "/opt/wren-deps";

/// A containerd release the tests know how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerdVersion {
    /// Debian 12's containerd 1.6.20, installed in the system.
    V1_6,
    /// containerd 1.7 (Debian trixie).
    V1_7,
    /// containerd 2.1 (Debian sid).
    V2_1,
}

/// The config file format a release reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// `version = 2`: 1.x, one CRI plugin (`io.containerd.grpc.v1.cri`).
    V2,
    /// `version = 3`: 2.x, CRI split into `io.containerd.cri.v1.{images,runtime}` and more.
    V3,
}

impl ContainerdVersion {
    /// The release named by `WREN_CONTAINERD`, 1.6 when unset; panics on an unknown name.
    pub fn from_env() -> Self {
        match std::env::var(VERSION_VAR).as_deref() {
            Err(_) | Ok("" | "1.6") => Self::V1_6,
            Ok("1.7") => Self::V1_7,
            Ok("2.1") => Self::V2_1,
            Ok(other) => panic!("{VERSION_VAR}={other}: expected 1.6, 1.7 or 2.1"),
        }
    }

    /// `1.6`, `1.7` or `2.1`.
    pub fn label(self) -> &'static str {
        match self {
            Self::V1_6 => "1.6",
            Self::V1_7 => "1.7",
            Self::V2_1 => "2.1",
        }
    }

    /// The config format this release reads.
    pub fn config_format(self) -> ConfigFormat {
        match self {
            Self::V1_6 | Self::V1_7 => ConfigFormat::V2,
            Self::V2_1 => ConfigFormat::V3,
        }
    }

    /// The directory holding this release's `containerd`, `ctr` and Go shim; `None` for the
    /// system's 1.6, found on `PATH`.
    pub fn bin_dir(self) -> Option<PathBuf> {
        let deps = deps_dir();
        match self {
            Self::V1_6 => None,
            Self::V1_7 | Self::V2_1 => Some(
                deps.join(format!("containerd-{}", self.label()))
                    .join("usr/bin"),
            ),
        }
    }

    /// The path (or, for 1.6, the `PATH` name) of one of this release's binaries.
    pub fn binary(self, name: &str) -> PathBuf {
        self.bin_dir()
            .map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
    }

    /// Why this release cannot run here (its binaries are missing), if it cannot.
    pub fn missing(self) -> Option<String> {
        let dir = self.bin_dir()?;
        let absent: Vec<&str> = ["containerd", "ctr", "containerd-shim-runc-v2"]
            .into_iter()
            .filter(|name| !Path::new(&dir).join(name).is_file())
            .collect();
        (!absent.is_empty()).then(|| {
            format!(
                "containerd {} lacks {} in {} (run scripts/install-deps.sh)",
                self.label(),
                absent.join(", "),
                dir.display()
            )
        })
    }

    /// containerd's `PATH`: this release's own binaries first (so the runtime type
    /// `io.containerd.runc.v2` starts its own Go shim), then `extra` dirs, then ours.
    pub fn daemon_path(self, extra: &[PathBuf]) -> std::ffi::OsString {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let dirs = self
            .bin_dir()
            .into_iter()
            .chain(extra.iter().cloned())
            .chain(std::env::split_paths(&inherited));
        std::env::join_paths(dirs).expect("binary dirs hold no ':'")
    }
}

/// Where `scripts/install-newer-deps.sh` unpacks releases: `$WREN_DEPS_DIR` or `/opt/wren-deps`.
pub fn deps_dir() -> PathBuf {
    std::env::var_os("WREN_DEPS_DIR").map_or_else(|| PathBuf::from(DEFAULT_DEPS_DIR), PathBuf::from)
}

/// Returns from the calling test (after a visible skip, a failure under CI) unless the
/// containerd release named by `WREN_CONTAINERD` is installed.
#[macro_export]
macro_rules! require_containerd {
    () => {
        if let Some(reason) = $crate::version::ContainerdVersion::from_env().missing() {
            $crate::skip(module_path!(), &reason);
            return;
        }
    };
}
