//! The runtime options of a container (`containerd.runc.v1.Options`): decoding them from the
//! Create request, and the two bundle files (`options.json`, `runtime`) that let the `delete`
//! action find runc's state after the daemon is gone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use protobuf::well_known_types::any::Any;
use protobuf::Message;
use serde::{Deserialize, Serialize};
use wren_shim_protocol::runc::Options;
use wren_shim_protocol::runtimeoptions::Options as CriOptions;

use super::options_config::{self, ConfigError};

/// Where runc keeps container state unless the options say otherwise.
pub const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";
/// The binary run when the options name none.
pub const DEFAULT_RUNC_BINARY: &str = "runc";

const OPTIONS_FILE: &str = "options.json";
const RUNTIME_FILE: &str = "runtime";
/// The type URL containerd gives the options (the proto full name).
const OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
/// What containerd's CRI plugin sends instead to runtime types other than runc's.
const CRI_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// Errors from decoding, saving or loading runtime options.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("runtime options have type {type_url}, expected {OPTIONS_TYPE} or {CRI_OPTIONS_TYPE}")]
    WrongType { type_url: String },
    #[error("failed to decode runtime options")]
    Decode(#[source] protobuf::Error),
    #[error("failed to read the runtime handler's configuration")]
    CriConfig(#[source] ConfigError),
    #[error("failed to encode runtime options as json")]
    EncodeJson(#[source] serde_json::Error),
    #[error("failed to decode runtime options json {path}")]
    DecodeJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The options the shim acts on, free of protobuf types. Serialised as the Go shim writes
/// `options.json` (proto field names, zero values omitted), so either shim's `delete` reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeOptions {
    #[serde(skip_serializing_if = "is_false")]
    pub no_pivot_root: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub no_new_keyring: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub shim_cgroup: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_uid: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub io_gid: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub binary_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub root: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub criu_path: String,
    #[serde(skip_serializing_if = "is_false")]
    pub systemd_cgroup: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub criu_image_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub criu_work_path: String,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl From<Options> for RuntimeOptions {
    fn from(options: Options) -> Self {
        Self {
            no_pivot_root: options.no_pivot_root,
            no_new_keyring: options.no_new_keyring,
            shim_cgroup: options.shim_cgroup,
            io_uid: options.io_uid,
            io_gid: options.io_gid,
            binary_name: options.binary_name,
            root: options.root,
            criu_path: options.criu_path,
            systemd_cgroup: options.systemd_cgroup,
            criu_image_path: options.criu_image_path,
            criu_work_path: options.criu_work_path,
        }
    }
}

impl RuntimeOptions {
    /// Decodes `CreateTaskRequest.options`: runc's options, or the CRI plugin's
    /// `runtimeoptions.v1.Options` pointing at the handler's TOML table. No options (or an
    /// empty `Any`) means defaults.
    pub fn from_any(any: Option<&Any>) -> Result<Self, Error> {
        let Some(any) = any.filter(|any| !any.type_url.is_empty() || !any.value.is_empty()) else {
            return Ok(Self::default());
        };
        // Clients have used both the bare full name and the `types.googleapis.com/` form.
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        match name {
            OPTIONS_TYPE => Options::parse_from_bytes(&any.value)
                .map(Self::from)
                .map_err(Error::Decode),
            CRI_OPTIONS_TYPE => {
                let cri = CriOptions::parse_from_bytes(&any.value).map_err(Error::Decode)?;
                options_config::from_cri(&cri).map_err(Error::CriConfig)
            }
            _ => Err(Error::WrongType {
                type_url: any.type_url.clone(),
            }),
        }
    }

    /// The runc binary to run.
    pub fn binary(&self) -> &str {
        if self.binary_name.is_empty() {
            DEFAULT_RUNC_BINARY
        } else {
            &self.binary_name
        }
    }

    /// runc's `--root` for containers of `namespace`.
    pub fn runc_root(&self, namespace: &str) -> PathBuf {
        let base = if self.root.is_empty() {
            DEFAULT_RUNC_ROOT
        } else {
            &self.root
        };
        Path::new(base).join(namespace)
    }

    /// Writes `options.json` and `runtime` into `bundle`.
    pub fn save(&self, bundle: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec(self).map_err(Error::EncodeJson)?;
        write(&bundle.join(OPTIONS_FILE), &json)?;
        write(&bundle.join(RUNTIME_FILE), self.binary_name.as_bytes())
    }

    /// Reads what [`save`](Self::save) wrote. Missing files mean defaults: the `delete` action
    /// may run for a bundle whose Create never got that far.
    pub fn load(bundle: &Path) -> Result<Self, Error> {
        let path = bundle.join(OPTIONS_FILE);
        let mut options = match fs::read(&path) {
            Ok(json) => serde_json::from_slice(&json).map_err(|source| Error::DecodeJson {
                path: path.clone(),
                source,
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Self::default(),
            Err(source) => return Err(Error::Read { path, source }),
        };
        let path = bundle.join(RUNTIME_FILE);
        match fs::read_to_string(&path) {
            Ok(binary) if !binary.trim().is_empty() => {
                options.binary_name = binary.trim().to_owned()
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Read { path, source }),
        }
        Ok(options)
    }
}

fn write(path: &Path, contents: &[u8]) -> Result<(), Error> {
    fs::write(path, contents).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_of(options: &Options) -> Any {
        let mut any = Any::new();
        any.type_url = OPTIONS_TYPE.to_owned();
        any.value = options.write_to_bytes().unwrap();
        any
    }

    #[test]
    fn missing_or_empty_options_are_defaults() {
        assert_eq!(
            RuntimeOptions::from_any(None).unwrap(),
            RuntimeOptions::default()
        );
        assert_eq!(
            RuntimeOptions::from_any(Some(&Any::new())).unwrap(),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn every_field_is_decoded() {
        let mut proto = Options::new();
        proto.no_pivot_root = true;
        proto.no_new_keyring = true;
        proto.shim_cgroup = "/shim".into();
        proto.io_uid = 1000;
        proto.io_gid = 1001;
        proto.binary_name = "/usr/sbin/runc".into();
        proto.root = "/run/x".into();
        proto.criu_path = "/criu".into();
        proto.systemd_cgroup = true;
        proto.criu_image_path = "/img".into();
        proto.criu_work_path = "/work".into();
        let options = RuntimeOptions::from_any(Some(&any_of(&proto))).unwrap();
        assert!(options.no_pivot_root && options.no_new_keyring && options.systemd_cgroup);
        assert_eq!((options.io_uid, options.io_gid), (1000, 1001));
        assert_eq!(options.binary(), "/usr/sbin/runc");
        assert_eq!(options.runc_root("k8s.io"), Path::new("/run/x/k8s.io"));
        assert_eq!(options.shim_cgroup, "/shim");
        assert_eq!(options.criu_path, "/criu");
        assert_eq!(options.criu_image_path, "/img");
        assert_eq!(options.criu_work_path, "/work");
    }

    #[test]
    fn prefixed_type_url_is_accepted_and_others_refused() {
        let mut any = any_of(&Options::new());
        any.type_url = format!("types.googleapis.com/{OPTIONS_TYPE}");
        assert!(RuntimeOptions::from_any(Some(&any)).is_ok());
        any.type_url = "containerd.runhcs.v1.Options".into();
        assert!(matches!(
            RuntimeOptions::from_any(Some(&any)),
            Err(Error::WrongType { .. })
        ));
    }

    #[test]
    fn cri_runtime_options_carry_the_handler_table() {
        let mut cri = CriOptions::new();
        cri.config_body = b"BinaryName = \"crun\"\nSystemdCgroup = true\n".to_vec();
        let mut any = Any::new();
        any.type_url = CRI_OPTIONS_TYPE.to_owned();
        any.value = cri.write_to_bytes().unwrap();
        let options = RuntimeOptions::from_any(Some(&any)).unwrap();
        assert_eq!(options.binary(), "crun");
        assert!(options.systemd_cgroup);
    }

    #[test]
    fn defaults_match_the_go_shim() {
        let options = RuntimeOptions::default();
        assert_eq!(options.binary(), "runc");
        assert_eq!(
            options.runc_root("default"),
            Path::new("/run/containerd/runc/default")
        );
        assert_eq!(serde_json::to_string(&options).unwrap(), "{}");
    }

    #[test]
    fn save_then_load_round_trips_and_missing_files_are_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            RuntimeOptions::load(dir.path()).unwrap(),
            RuntimeOptions::default()
        );
        let options = RuntimeOptions {
            binary_name: "crun".into(),
            root: "/r".into(),
            systemd_cgroup: true,
            ..RuntimeOptions::default()
        };
        options.save(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("runtime")).unwrap(),
            "crun"
        );
        assert_eq!(RuntimeOptions::load(dir.path()).unwrap(), options);
    }
}
