//! The few OCI spec fields a wrenvm container runs with, read from `config.json` (or, for an
//! exec, the `Process` JSON in the request) into the agent's `ProcessSpec`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use wren_shim_protocol::vm_agent::ProcessSpec;

/// A spec that cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Unreadable.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not the JSON expected.
    #[error("parse the OCI spec: {0}")]
    Parse(#[from] serde_json::Error),
    /// No process.
    #[error("the spec has no process")]
    NoProcess,
    /// A terminal was asked for.
    #[error("terminal processes are not supported by wrenvm")]
    Terminal,
}

#[derive(Debug, Deserialize)]
struct Spec {
    process: Option<Process>,
    root: Option<Root>,
    #[serde(default)]
    hostname: String,
}

#[derive(Debug, Deserialize)]
struct Root {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    #[serde(default)]
    terminal: bool,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    cwd: String,
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

/// What Create needs from a bundle.
#[derive(Debug)]
pub struct Container {
    /// The rootfs directory on the host.
    pub rootfs: PathBuf,
    /// The guest hostname for the container's processes.
    pub hostname: String,
    /// The init process.
    pub process: ProcessSpec,
}

/// Reads `<bundle>/config.json`.
pub fn container(bundle: &Path, stdin: bool) -> Result<Container, SpecError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| SpecError::Read { path, source })?;
    let spec: Spec = serde_json::from_slice(&text)?;
    let process = spec.process.ok_or(SpecError::NoProcess)?;
    let rootfs = bundle.join(
        spec.root
            .map_or_else(|| PathBuf::from("rootfs"), |root| root.path),
    );
    Ok(Container {
        rootfs,
        hostname: spec.hostname,
        process: convert(process, stdin)?,
    })
}

/// Parses an Exec's `Process` JSON.
pub fn exec_process(json: &[u8], stdin: bool) -> Result<ProcessSpec, SpecError> {
    convert(serde_json::from_slice(json)?, stdin)
}

fn convert(process: Process, stdin: bool) -> Result<ProcessSpec, SpecError> {
    if process.terminal {
        return Err(SpecError::Terminal);
    }
    if process.args.is_empty() {
        return Err(SpecError::NoProcess);
    }
    Ok(ProcessSpec {
        args: process.args,
        env: process.env,
        cwd: process.cwd,
        uid: process.user.uid,
        gid: process.user.gid,
        additional_gids: process.user.additional_gids,
        stdin,
        ..ProcessSpec::default()
    })
}
