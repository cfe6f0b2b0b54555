//! What nsbox takes from a bundle's `config.json`, checked once so that the daemon rejects
//! an unsupported spec at Create and the supervisor can trust what it re-reads at Start.
//!
//! Only the fields nsbox runs are parsed (with serde, not a full OCI spec crate): a runtime
//! on the framework needs no more than it uses. Anything unknown is ignored here and refused
//! below where ignoring it would change what runs.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A spec nsbox cannot run; answered as InvalidArgument.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to parse {path}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the spec has no process, or process.args is empty")]
    NoArgs,
    #[error("the spec has no root")]
    NoRoot,
    #[error("nsbox cannot create a {kind} namespace")]
    UnsupportedNamespace { kind: String },
    #[error("nsbox cannot join the existing {kind} namespace {path}")]
    JoinNamespace { kind: String, path: PathBuf },
    #[error("nsbox needs a mount namespace: pivot_root must never run in the host's")]
    NoMountNamespace,
    #[error("setting the hostname needs a uts namespace")]
    HostnameWithoutUts,
    #[error("nsbox has no terminal support")]
    Terminal,
}

/// The part of the OCI runtime spec nsbox reads (field names as in `config.json`).
#[derive(Debug, Deserialize)]
struct Spec {
    process: Option<Process>,
    root: Option<Root>,
    hostname: Option<String>,
    linux: Option<Linux>,
}

#[derive(Debug, Deserialize)]
struct Process {
    #[serde(default)]
    terminal: bool,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    cwd: PathBuf,
    #[serde(default)]
    user: User,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
struct Root {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
}

#[derive(Debug, Deserialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    path: Option<PathBuf>,
}

/// The namespaces to create: the `unshare(2)` flags, and what they imply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// `CLONE_NEW*` flags for one `unshare(2)` call.
    pub clone_flags: libc::c_int,
}

impl Namespaces {
    fn uts(self) -> bool {
        self.clone_flags & libc::CLONE_NEWUTS != 0
    }
}

/// Everything nsbox runs: the payload, its identity and its root.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The root filesystem, absolute.
    pub rootfs: PathBuf,
    pub hostname: Option<String>,
    pub namespaces: Namespaces,
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, split at the first `=`.
    pub env: Vec<(String, String)>,
    /// Inside the rootfs.
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Reads and checks `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Plan, SpecError> {
    let path = bundle.join("config.json");
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(source) => return Err(SpecError::Read { path, source }),
    };
    let spec: Spec =
        serde_json::from_slice(&text).map_err(|source| SpecError::Parse { path, source })?;
    let process = spec.process.ok_or(SpecError::NoArgs)?;
    if process.terminal {
        return Err(SpecError::Terminal);
    }
    if process.args.is_empty() {
        return Err(SpecError::NoArgs);
    }
    let root = spec.root.ok_or(SpecError::NoRoot)?;
    let namespaces = namespaces(spec.linux.map(|linux| linux.namespaces).unwrap_or_default())?;
    if spec.hostname.is_some() && !namespaces.uts() {
        return Err(SpecError::HostnameWithoutUts);
    }
    let env = process
        .env
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (entry, String::new()),
        })
        .collect();
    Ok(Plan {
        // A relative root is relative to the bundle; `ctr run --rootfs` passes an absolute one.
        rootfs: bundle.join(root.path),
        hostname: spec.hostname,
        namespaces,
        args: process.args,
        env,
        cwd: process.cwd,
        uid: process.user.uid,
        gid: process.user.gid,
        additional_gids: process.user.additional_gids,
    })
}

/// The namespaces nsbox creates: mount (required), pid, uts, ipc and network; anything else
/// (user, cgroup, time, or joining an existing namespace by path) is refused, not ignored.
fn namespaces(listed: Vec<Namespace>) -> Result<Namespaces, SpecError> {
    let mut clone_flags = 0;
    for namespace in listed {
        if let Some(path) = namespace.path {
            return Err(SpecError::JoinNamespace {
                kind: namespace.kind,
                path,
            });
        }
        clone_flags |= match namespace.kind.as_str() {
            "mount" => libc::CLONE_NEWNS,
            "pid" => libc::CLONE_NEWPID,
            "uts" => libc::CLONE_NEWUTS,
            "ipc" => libc::CLONE_NEWIPC,
            "network" => libc::CLONE_NEWNET,
            _ => {
                return Err(SpecError::UnsupportedNamespace {
                    kind: namespace.kind,
                })
            }
        };
    }
    if clone_flags & libc::CLONE_NEWNS == 0 {
        return Err(SpecError::NoMountNamespace);
    }
    Ok(Namespaces { clone_flags })
}
