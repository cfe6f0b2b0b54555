//! Running a shim binary the way containerd does: the `start` and `delete` actions.
//!
//! argv, env, cwd and stdin follow docs/protocol.md §1.3 (containerd 1.7 to 2.2 form, which
//! every shim accepts): `<shim> -namespace NS -address ADDR -publish-binary BIN -id ID
//! [-debug] start`, cwd = bundle, runtime options as a protobuf `Any` on stdin.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use protobuf::Message;
use wren_shim_protocol::{any, runc, task};

use crate::address::{self, AddressError, ShimAddress};
use crate::client::{exit_of, ExitInfo};

/// Whether the shim logs at debug level (`-debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShimDebug {
    /// Normal logging.
    #[default]
    Off,
    /// Pass `-debug`.
    On,
}

/// Which shim, for which container, talking to which manager sockets.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// The shim binary.
    pub binary: PathBuf,
    /// containerd namespace.
    pub namespace: String,
    /// Container id.
    pub id: String,
    /// Absolute bundle directory (the shim's cwd). Its name should equal `id`: the Go
    /// shim's `delete` action looks for `<dirname(cwd)>/<id>`.
    pub bundle: PathBuf,
    /// The "containerd" address (`-address`, `GRPC_ADDRESS`). Nothing needs to listen
    /// there, but it must be unique per manager: shims hash it into their socket name.
    pub grpc_address: PathBuf,
    /// Where the events sink listens (`TTRPC_ADDRESS`).
    pub events_address: PathBuf,
    /// `-publish-binary`; modern shims never run it.
    pub publish_binary: PathBuf,
    /// `-debug` or not.
    pub debug: ShimDebug,
}

/// Errors from the `start` and `delete` actions.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The binary could not be run.
    #[error("failed to run shim {binary}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the runtime options to `start`'s stdin failed.
    #[error("failed to send runtime options to shim {binary}")]
    Stdin {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Encoding the runtime options failed.
    #[error("failed to encode runtime options")]
    Options(#[source] wren_shim_protocol::any::AnyError),
    /// The action exited unsuccessfully.
    #[error("shim {binary} {action} failed ({status}): {output}")]
    Failed {
        /// The binary.
        binary: PathBuf,
        /// `start` or `delete`.
        action: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed (stderr, else stdout), trimmed.
        output: String,
    },
    /// `start` printed an unusable address.
    #[error("shim {binary} start printed an unusable address")]
    Address {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: AddressError,
    },
    /// `delete` printed something that is not a `DeleteResponse`.
    #[error("shim {binary} delete printed a malformed response")]
    DeleteResponse {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: protobuf::Error,
    },
}

impl ShimConfig {
    /// The shim command line for `action`, without the action-specific flags.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.current_dir(&self.bundle)
            .arg("-namespace")
            .arg(&self.namespace)
            .arg("-address")
            .arg(&self.grpc_address)
            .arg("-publish-binary")
            .arg(&self.publish_binary)
            .arg("-id")
            .arg(&self.id)
            .env("TTRPC_ADDRESS", &self.events_address)
            .env("GRPC_ADDRESS", &self.grpc_address)
            .env("NAMESPACE", &self.namespace)
            .env("MAX_SHIM_VERSION", "2");
        cmd
    }

    /// Runs `<shim> ... start` with `options` on stdin and parses the address it prints.
    pub fn start(&self, options: Option<&runc::Options>) -> Result<ShimAddress, LaunchError> {
        let stdin = match options {
            Some(options) => any::pack(options)
                .and_then(|packed| {
                    packed
                        .write_to_bytes()
                        .map_err(|source| any::AnyError::Encode {
                            type_name: "google.protobuf.Any".into(),
                            source,
                        })
                })
                .map_err(LaunchError::Options)?,
            None => Vec::new(),
        };
        let mut cmd = self.command();
        if self.debug == ShimDebug::On {
            cmd.arg("-debug");
        }
        cmd.arg("start");
        let output = self.run(cmd, &stdin, "start")?;
        address::parse_start_output(&output.stdout).map_err(|source| LaunchError::Address {
            binary: self.binary.clone(),
            source,
        })
    }

    /// Runs `<shim> ... -bundle B delete`, which cleans up after a shim that is gone,
    /// and returns the exit it reports (the Go shim says 137, SIGKILL).
    pub fn delete_action(&self) -> Result<ExitInfo, LaunchError> {
        let mut cmd = self.command();
        cmd.arg("-bundle").arg(&self.bundle);
        if self.debug == ShimDebug::On {
            cmd.arg("-debug");
        }
        cmd.arg("delete");
        let output = self.run(cmd, &[], "delete")?;
        let resp = task::DeleteResponse::parse_from_bytes(&output.stdout).map_err(|source| {
            LaunchError::DeleteResponse {
                binary: self.binary.clone(),
                source,
            }
        })?;
        Ok(exit_of(&resp))
    }

    fn run(
        &self,
        mut cmd: Command,
        stdin: &[u8],
        action: &'static str,
    ) -> Result<Output, LaunchError> {
        let spawn_err = |source| LaunchError::Spawn {
            binary: self.binary.clone(),
            source,
        };
        let mut child = cmd
            .stdin(if stdin.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let Some(mut pipe) = child.stdin.take() {
            // Options are a few hundred bytes, far below the pipe buffer: this cannot block.
            pipe.write_all(stdin).map_err(|source| LaunchError::Stdin {
                binary: self.binary.clone(),
                source,
            })?;
        }
        let output = child.wait_with_output().map_err(spawn_err)?;
        if !output.status.success() {
            return Err(LaunchError::Failed {
                binary: self.binary.clone(),
                action,
                status: output.status,
                output: describe_output(&output),
            });
        }
        Ok(output)
    }
}

fn describe_output(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout)
    } else {
        stderr
    };
    text.trim().to_owned()
}

/// Where a shim binary is found: an explicit path made absolute (the shim runs in its
/// bundle, where a relative path means something else), otherwise `name` next to `beside`
/// (the caller's own executable), then in `PATH`.
pub fn resolve_binary(name: &Path, beside: Option<&Path>) -> Option<PathBuf> {
    if name.components().count() > 1 {
        let path = std::path::absolute(name).ok()?;
        return path.exists().then_some(path);
    }
    let sibling = beside.and_then(Path::parent).map(|dir| dir.join(name));
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    sibling
        .into_iter()
        .chain(in_path)
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn relative_explicit_path_becomes_absolute() {
        // cargo runs unit tests in the package directory.
        let found = resolve_binary(Path::new("src/launch.rs"), None).unwrap();
        assert!(found.is_absolute(), "{}", found.display());
        assert!(found.ends_with("src/launch.rs"));
        assert_eq!(resolve_binary(Path::new("src/nope"), None), None);
    }

    /// A fake shim script recording argv, cwd, env and stdin, printing an address.
    fn fake_shim(dir: &Path, print: &str) -> PathBuf {
        let path = dir.join("containerd-shim-fake-v2");
        let script = format!(
            "#!/bin/sh\necho \"$@\" > args\npwd > cwd\n\
             echo \"$TTRPC_ADDRESS $GRPC_ADDRESS $NAMESPACE $MAX_SHIM_VERSION\" > env\n\
             cat > stdin\nprintf '{print}'\n"
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn config(dir: &Path, binary: PathBuf) -> ShimConfig {
        ShimConfig {
            binary,
            namespace: "ns1".into(),
            id: "c1".into(),
            bundle: dir.to_path_buf(),
            grpc_address: dir.join("wren.sock"),
            events_address: dir.join("events.sock"),
            publish_binary: PathBuf::from("/bin/false"),
            debug: ShimDebug::On,
        }
    }

    #[test]
    fn start_passes_argv_env_cwd_and_options() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let cfg = config(&dir, fake_shim(&dir, "unix:///run/x/s.sock"));
        let options = runc::Options {
            binary_name: "crun".into(),
            ..Default::default()
        };
        let address = cfg.start(Some(&options)).unwrap();
        assert_eq!(address.socket, PathBuf::from("/run/x/s.sock"));
        let args = std::fs::read_to_string(dir.join("args")).unwrap();
        let want = format!(
            "-namespace ns1 -address {0}/wren.sock -publish-binary /bin/false -id c1 -debug start\n",
            dir.display()
        );
        assert_eq!(args, want);
        assert_eq!(
            std::fs::read_to_string(dir.join("cwd")).unwrap().trim(),
            dir.to_str().unwrap()
        );
        let env = std::fs::read_to_string(dir.join("env")).unwrap();
        assert_eq!(
            env.trim(),
            format!("{0}/events.sock {0}/wren.sock ns1 2", dir.display())
        );
        let stdin = std::fs::read(dir.join("stdin")).unwrap();
        let packed = protobuf::well_known_types::any::Any::parse_from_bytes(&stdin).unwrap();
        let decoded: runc::Options = any::unpack(&packed).unwrap();
        assert_eq!(decoded.binary_name, "crun");
    }

    #[test]
    fn failing_start_reports_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim");
        std::fs::write(&path, "#!/bin/sh\necho boom >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = config(dir.path(), path).start(None).unwrap_err();
        assert!(
            matches!(&err, LaunchError::Failed { output, .. } if output == "boom"),
            "{err}"
        );
    }

    #[test]
    fn resolve_prefers_sibling_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let shim = fake_shim(dir.path(), "x");
        let me = dir.path().join("wrenctl");
        let found = resolve_binary(Path::new("containerd-shim-fake-v2"), Some(&me)).unwrap();
        assert_eq!(found, shim);
        assert_eq!(
            resolve_binary(Path::new("sh"), None)
                .unwrap()
                .file_name()
                .unwrap(),
            "sh"
        );
        assert!(resolve_binary(Path::new("/nonexistent/shim"), None).is_none());
    }
}
