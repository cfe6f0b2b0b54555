//! What nsbox takes from a bundle's `config.json`, checked once so that the daemon rejects
//! an unsupported spec at Create and the supervisor can trust what it re-reads at Start.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// A spec nsbox cannot run; answered as InvalidArgument.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("failed to load {path}")]
    Load {
        path: PathBuf,
        source: oci_spec::OciSpecError,
    },
    #[error("the spec has no process, or process.args is empty")]
    NoArgs,
    #[error("the spec has no root")]
    NoRoot,
    #[error("nsbox cannot create a {kind} namespace")]
    UnsupportedNamespace { kind: LinuxNamespaceType },
    #[error("nsbox cannot join the existing {kind} namespace {path}")]
    JoinNamespace {
        kind: LinuxNamespaceType,
        path: PathBuf,
    },
    #[error("nsbox needs a mount namespace: pivot_root must never run in the host's")]
    NoMountNamespace,
    #[error("setting the hostname needs a uts namespace")]
    HostnameWithoutUts,
    #[error("nsbox has no terminal support")]
    Terminal,
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
    let spec = Spec::load(&path).map_err(|source| SpecError::Load { path, source })?;
    let process = spec.process().as_ref().ok_or(SpecError::NoArgs)?;
    if process.terminal().unwrap_or(false) {
        return Err(SpecError::Terminal);
    }
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(SpecError::NoArgs);
    }
    let root = spec.root().as_ref().ok_or(SpecError::NoRoot)?;
    let namespaces = namespaces(&spec)?;
    if spec.hostname().is_some() && !namespaces.uts() {
        return Err(SpecError::HostnameWithoutUts);
    }
    let env = process
        .env()
        .iter()
        .flatten()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (entry.clone(), String::new()),
        })
        .collect();
    let user = process.user();
    Ok(Plan {
        // A relative root is relative to the bundle; `ctr run --rootfs` passes an absolute one.
        rootfs: bundle.join(root.path()),
        hostname: spec.hostname().clone(),
        namespaces,
        args,
        env,
        cwd: process.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
    })
}

/// The namespaces nsbox creates: mount (required), pid, uts, ipc and network; anything else
/// (user, cgroup, time, or joining an existing namespace by path) is refused, not ignored.
fn namespaces(spec: &Spec) -> Result<Namespaces, SpecError> {
    let listed = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().clone())
        .unwrap_or_default();
    let mut clone_flags = 0;
    for namespace in listed {
        let kind = namespace.typ();
        if let Some(path) = namespace.path() {
            return Err(SpecError::JoinNamespace {
                kind,
                path: path.clone(),
            });
        }
        clone_flags |= match kind {
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            kind => return Err(SpecError::UnsupportedNamespace { kind }),
        };
    }
    if clone_flags & libc::CLONE_NEWNS == 0 {
        return Err(SpecError::NoMountNamespace);
    }
    Ok(Namespaces { clone_flags })
}
