//! The short-lived invocations: `delete` (clean up after a shim that is gone) and `-info`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::well_known_types::any::Any;
use protobuf::MessageField;
use wren_process::DirectSpawner;
use wren_runc_driver::{DeleteMode, Runc, RuncConfig};
use wren_shim::{identifier, CleanupContext};
use wren_shim_protocol::types::{RuntimeInfo, RuntimeVersion};

use crate::container::runc_for;
use crate::options::{self, RuntimeOptions};
use wren_shim::rootfs;

/// The type URL containerd decodes `RuntimeInfo.features` with.
const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Runtimes that keep a container's state in the directory `<root>/<id>` and, without it,
/// have nothing for `delete --force` to do. Others (runsc keeps `<root>/<id>_sandbox:…`
/// files) always get their `delete`.
const STATE_DIR_RUNTIMES: [&str; 2] = ["runc", "crun"];

/// Errors of `delete` and `-info`.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("failed to load the runtime options of {id}")]
    LoadOptions {
        id: String,
        #[source]
        source: options::Error,
    },
    #[error("failed to unmount the rootfs of {id}")]
    Unmount {
        id: String,
        #[source]
        source: rootfs::Error,
    },
    #[error("failed to read {path}")]
    ReadPidFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid runtime options")]
    InfoOptions(#[source] options::Error),
    #[error("failed to query the runtime's features")]
    Features(#[source] wren_runc_driver::Error),
}

/// `delete`: `runc delete --force` (unless runc provably has no state for the task), unmount
/// the rootfs, and report the init pid. Every step tolerates what a previous run (or a clean
/// shutdown) already removed.
pub fn delete_action(context: &CleanupContext) -> Result<u32, CleanupError> {
    let bundle = &context.bundle;
    let id = &context.id;
    let options = RuntimeOptions::load(bundle).map_err(|source| CleanupError::LoadOptions {
        id: id.clone(),
        source,
    })?;
    // containerd runs this after every clean removal too, when runc's state is long gone.
    if let Some(dir) = missing_state_dir(context, &options) {
        log::debug!("no runc state at {}: skipping runc delete", dir.display());
    } else {
        let runc = runc_for(&context.monitor, &context.namespace, bundle, &options);
        if let Err(err) = runc.delete(id, DeleteMode::Force) {
            log::warn!("failed to remove runc container {id}: {err}");
        }
    }
    rootfs::unmount_recursive(&bundle.join("rootfs")).map_err(|source| CleanupError::Unmount {
        id: id.clone(),
        source,
    })?;
    let path = bundle.join("init.pid");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or_else(|_| {
            log::warn!("{} holds no pid", path.display());
            0
        })),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            log::warn!("failed to read init pid file {}: not found", path.display());
            Ok(0)
        }
        Err(source) => Err(CleanupError::ReadPidFile { path, source }),
    }
}

/// The runtime's state directory of the task when it provably does not exist, the one case
/// where `delete --force` could only answer "container does not exist". Whatever is there,
/// even a dangling symlink, is the runtime's to judge. The framework has refused a bad
/// `-namespace` or `-id` already; the check here keeps this function safe on its own.
fn missing_state_dir(context: &CleanupContext, options: &RuntimeOptions) -> Option<PathBuf> {
    let runtime = Path::new(options.binary()).file_name()?.to_str()?;
    if !STATE_DIR_RUNTIMES.contains(&runtime)
        || identifier::validate("namespace", &context.namespace).is_err()
        || identifier::validate("id", &context.id).is_err()
    {
        return None;
    }
    let dir = options.runc_root(&context.namespace).join(&context.id);
    match std::fs::symlink_metadata(&dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Some(dir),
        _ => None,
    }
}

/// `-info`: name, version, the options echoed, and the runtime's `features` JSON as is.
pub fn info(name: &str, version: &str, options: Option<&Any>) -> Result<RuntimeInfo, CleanupError> {
    let runtime_options = RuntimeOptions::from_any(options).map_err(CleanupError::InfoOptions)?;
    // No reaper runs in this short-lived invocation: waiting on the child directly is right.
    let config = RuncConfig {
        binary: PathBuf::from(runtime_options.binary()),
        ..RuncConfig::default()
    };
    let features = Runc::new(config, Arc::new(DirectSpawner))
        .features()
        .map_err(CleanupError::Features)?;
    let mut info = RuntimeInfo::new();
    info.name = name.to_owned();
    let mut runtime_version = RuntimeVersion::new();
    runtime_version.version = version.to_owned();
    info.version = MessageField::some(runtime_version);
    info.options = MessageField::from_option(options.cloned());
    let mut any = Any::new();
    any.type_url = FEATURES_TYPE.to_owned();
    any.value = features.raw;
    info.features = MessageField::some(any);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_provably_missing_state_dir_skips_the_runtime() {
        let tmp = tempfile::tempdir().unwrap();
        let context = |id: &str| CleanupContext {
            namespace: "ns".into(),
            id: id.into(),
            bundle: tmp.path().join("bundle"),
            address: String::new(),
            monitor: wren_shim::Monitor::new(),
        };
        let options = |binary: &str| RuntimeOptions {
            binary_name: binary.into(),
            root: tmp.path().display().to_string(),
            ..RuntimeOptions::default()
        };
        let runc = options("");
        let state = tmp.path().join("ns");
        assert_eq!(
            missing_state_dir(&context("c1"), &runc),
            Some(state.join("c1"))
        );
        let by_path = options("/usr/local/sbin/runc");
        assert!(missing_state_dir(&context("c1"), &by_path).is_some());
        for other in ["runsc", "/opt/runc-wrapper.sh"] {
            assert_eq!(missing_state_dir(&context("c1"), &options(other)), None);
        }
        assert_eq!(missing_state_dir(&context("../c1"), &runc), None);

        std::fs::create_dir_all(state.join("dir")).unwrap();
        std::fs::write(state.join("file"), "").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), state.join("dangling")).unwrap();
        for present in ["dir", "file", "dangling"] {
            assert_eq!(
                missing_state_dir(&context(present), &runc),
                None,
                "{present}"
            );
        }
    }

    #[test]
    fn info_carries_runc_features_json() {
        if std::process::Command::new("runc")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP info_carries_runc_features_json: runc not installed");
            return;
        }
        let info = info("io.containerd.wren.v2", "0.1.0", None).unwrap();
        assert_eq!(info.name, "io.containerd.wren.v2");
        assert_eq!(info.version.version, "0.1.0");
        assert_eq!(info.features.type_url, FEATURES_TYPE);
        let features: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
        assert!(features["ociVersionMax"].is_string());
    }
}
