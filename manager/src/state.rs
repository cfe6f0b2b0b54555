//! `wrenctl`'s state directory: one record per container it started, so a later
//! `wrenctl` finds a detached container's shim again.
//!
//! Layout: `<root>/wren.sock` is the (never listened on) address handed to shims as
//! `-address`; `<root>/<namespace>/<id>/` holds `container.json`, the events socket,
//! the stdio FIFO directories and, for bundles wrenctl wrote itself, the bundle.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::address::{ShimAddress, TaskApi};

/// Whether wrenctl wrote the bundle (and removes it on delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BundleOwner {
    /// The user's bundle: left in place.
    User,
    /// Written by wrenctl under the state directory: removed with the container.
    Wrenctl,
}

/// Everything needed to find and drive a container's shim again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id.
    pub id: String,
    /// containerd namespace.
    pub namespace: String,
    /// The shim binary.
    pub shim: PathBuf,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Who owns the bundle.
    pub bundle_owner: BundleOwner,
    /// The shim's socket.
    pub socket: PathBuf,
    /// The task service version the shim announced.
    pub api: TaskApi,
    /// The events socket the shim publishes to.
    pub events_address: PathBuf,
    /// Where a detached container's output goes, if anywhere.
    pub output_log: Option<PathBuf>,
}

impl ContainerRecord {
    /// The shim address to dial.
    pub fn address(&self) -> ShimAddress {
        ShimAddress {
            socket: self.socket.clone(),
            api: self.api,
        }
    }
}

/// Errors reading or writing the state directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A filesystem operation failed.
    #[error("failed to access state {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record is not valid JSON.
    #[error("corrupt state record {path}")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// No record for this container.
    #[error("no container {id:?} in namespace {namespace:?}")]
    NotFound {
        /// Container id.
        id: String,
        /// Namespace.
        namespace: String,
    },
}

/// A state directory root.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

const RECORD: &str = "container.json";

impl StateDir {
    /// Uses `root` (created 0700 when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `-address` handed to shims: unique per state directory, so socket hashes
    /// of two managers never collide.
    pub fn grpc_address(&self) -> PathBuf {
        self.root.join("wren.sock")
    }

    /// The directory of one container.
    pub fn container_dir(&self, namespace: &str, id: &str) -> PathBuf {
        self.root.join(namespace).join(id)
    }

    /// Creates the container's directory (0700); fails if it already exists.
    pub fn create_container_dir(&self, namespace: &str, id: &str) -> Result<PathBuf, StateError> {
        let dir = self.container_dir(namespace, id);
        let io_err = |source| StateError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.root.join(namespace))
            .map_err(io_err)?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err)?;
        Ok(dir)
    }

    /// Writes `record` atomically (write, then rename).
    pub fn save(&self, record: &ContainerRecord) -> Result<(), StateError> {
        let dir = self.container_dir(&record.namespace, &record.id);
        let path = dir.join(RECORD);
        let tmp = dir.join(".container.json.tmp");
        let text = serde_json::to_vec_pretty(record).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(|source| StateError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| StateError::Io { path, source })
    }

    /// Reads one container's record.
    pub fn load(&self, namespace: &str, id: &str) -> Result<ContainerRecord, StateError> {
        let path = self.container_dir(namespace, id).join(RECORD);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StateError::NotFound {
                    id: id.to_owned(),
                    namespace: namespace.to_owned(),
                })
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// All records in `namespace`, sorted by id.
    pub fn list(&self, namespace: &str) -> Result<Vec<ContainerRecord>, StateError> {
        let dir = self.root.join(namespace);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StateError::Io { path: dir, source }),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StateError::Io {
                path: dir.clone(),
                source,
            })?;
            let id = entry.file_name().to_string_lossy().into_owned();
            match self.load(namespace, &id) {
                Ok(record) => records.push(record),
                // A directory without a record is a run still starting or half removed.
                Err(StateError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    /// Removes the container's directory and everything in it.
    pub fn remove(&self, namespace: &str, id: &str) -> Result<(), StateError> {
        let dir = self.container_dir(namespace, id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { path: dir, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_list_sorted() {
        let root = tempfile::tempdir().unwrap();
        let state = StateDir::new(root.path());
        for id in ["b", "a"] {
            let dir = state.create_container_dir("default", id).unwrap();
            let record = ContainerRecord {
                id: id.into(),
                namespace: "default".into(),
                shim: "/usr/bin/shim".into(),
                bundle: dir.join("bundle"),
                bundle_owner: BundleOwner::Wrenctl,
                socket: "/run/s".into(),
                api: TaskApi::V2,
                events_address: dir.join("events.sock"),
                output_log: None,
            };
            state.save(&record).unwrap();
            assert_eq!(state.load("default", id).unwrap(), record);
        }
        assert!(state.create_container_dir("default", "a").is_err());
        let ids: Vec<_> = state
            .list("default")
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        state.remove("default", "a").unwrap();
        assert!(matches!(
            state.load("default", "a"),
            Err(StateError::NotFound { .. })
        ));
        assert!(state.list("other").unwrap().is_empty());
    }
}
