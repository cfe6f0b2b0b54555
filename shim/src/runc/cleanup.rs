//! The short-lived invocations: `delete` (clean up after a shim that is gone) and `-info`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use protobuf::well_known_types::any::Any;
use protobuf::MessageField;
use wren_runc_driver::{DeleteMode, Runc, RuncConfig, StdMonitor};
use wren_shim::CleanupContext;
use wren_shim_protocol::types::{RuntimeInfo, RuntimeVersion};

use crate::runc::container::runc_for;
use crate::runc::mount;
use crate::runc::options::{self, RuntimeOptions};
use crate::runc::spawn::ReapedSpawner;

/// The type URL containerd decodes `RuntimeInfo.features` with.
const FEATURES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

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
        source: mount::Error,
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

/// `delete`: `runc delete --force`, unmount the rootfs, and report the init pid. Every step
/// tolerates what a previous run (or a clean shutdown) already removed.
pub fn delete_action(context: &CleanupContext) -> Result<u32, CleanupError> {
    let bundle = &context.bundle;
    let id = &context.id;
    let options = RuntimeOptions::load(bundle).map_err(|source| CleanupError::LoadOptions {
        id: id.clone(),
        source,
    })?;
    let spawner = ReapedSpawner::new(Arc::clone(&context.monitor));
    let runc = runc_for(&spawner, &context.namespace, bundle, &options);
    if let Err(err) = runc.delete(id, DeleteMode::Force) {
        log::warn!("failed to remove runc container {id}: {err}");
    }
    mount::unmount_recursive(&bundle.join("rootfs")).map_err(|source| CleanupError::Unmount {
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

/// `-info`: name, version, the options echoed, and the runtime's `features` JSON as is.
pub fn info(name: &str, version: &str, options: Option<&Any>) -> Result<RuntimeInfo, CleanupError> {
    let runtime_options = RuntimeOptions::from_any(options).map_err(CleanupError::InfoOptions)?;
    // No reaper runs in this short-lived invocation: waiting on the child directly is right.
    let config = RuncConfig {
        binary: PathBuf::from(runtime_options.binary()),
        ..RuncConfig::default()
    };
    let features = Runc::new(config, Arc::new(StdMonitor))
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
