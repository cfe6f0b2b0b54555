//! Loading the kernel modules the host packed into the initramfs.
//!
//! The host writes `/lib/modules/order`, one `.ko` file name a line, dependencies first
//! (resolved from the kernel's `modules.dep`), so loading is a walk down the list.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// A module that would not load.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The order file is missing.
    #[error("read {path}: {source}")]
    Order {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A module file could not be opened.
    #[error("open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel refused it.
    #[error("finit_module {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Errno,
    },
}

/// Loads every module named in `<dir>/order`, in order.
pub fn load_all(dir: &Path) -> Result<(), ModuleError> {
    let order_path = dir.join("order");
    let order = std::fs::read_to_string(&order_path).map_err(|source| ModuleError::Order {
        path: order_path,
        source,
    })?;
    for name in order.lines().map(str::trim).filter(|name| !name.is_empty()) {
        let path = dir.join(name);
        let file = File::open(&path).map_err(|source| ModuleError::Open {
            path: path.clone(),
            source,
        })?;
        match finit_module(file.as_fd(), c"", ModuleInitFlags::empty()) {
            // Built in, or already pulled in: either way it is there.
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(source) => return Err(ModuleError::Load { path, source }),
        }
    }
    Ok(())
}
