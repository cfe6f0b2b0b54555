//! wrenctl's commands.

pub mod args;
pub mod checkpoint;
pub mod events;
pub mod manage;
pub mod options;
pub mod run;

use std::path::PathBuf;

use wren_manager::launch::{ShimConfig, ShimDebug};
use wren_manager::state::{ContainerRecord, StateDir};

/// What every command needs: where state lives and which namespace it works in.
#[derive(Debug)]
pub struct Ctl {
    pub state: StateDir,
    pub namespace: String,
    pub debug: bool,
}

impl Ctl {
    /// The shim invocation for a recorded container.
    pub fn shim_config(&self, record: &ContainerRecord) -> ShimConfig {
        ShimConfig {
            binary: record.shim.clone(),
            namespace: record.namespace.clone(),
            id: record.id.clone(),
            bundle: record.bundle.clone(),
            grpc_address: self.state.grpc_address(),
            events_address: record.events_address.clone(),
            // Modern shims never exec it; pointing at ourselves keeps the argv honest.
            publish_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("wrenctl")),
            debug: if self.debug {
                ShimDebug::On
            } else {
                ShimDebug::Off
            },
        }
    }
}
