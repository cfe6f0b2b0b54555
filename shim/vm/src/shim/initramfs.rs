//! The guest's initramfs: the agent as `/init`, its shared libraries, and the kernel
//! modules it loads (virtio PCI and console, 9p over virtio), built on first use into the
//! cache directory and reused while the kernel and agent stay the same.
//!
//! Why the agent's shared libraries are packed rather than the agent linked static: the
//! workspace's plain `cargo build` (what CI and `cargo test` run) links it dynamically
//! against glibc, and a per-binary `-C target-feature=+crt-static` cannot be asked for from
//! Cargo.toml. So the builder asks `ldd` (glibc's own resolver: it follows PT_INTERP and
//! DT_NEEDED the way the loader will) and copies what it names to the same paths. A static
//! agent (scripts/build-release.sh) has none and gets none.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wren_shim::Monitor;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::cpio;

/// The modules the agent needs; their dependencies come from `modules.dep`.
const MODULES: &[&str] = &["virtio_pci", "virtio_console", "9pnet_virtio", "9p"];

/// Why no initramfs could be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A module is neither in `modules.dep` nor usable.
    #[error("kernel module {0} not found in modules.dep (is it built in? compressed?)")]
    Module(String),
    /// `ldd` failed.
    #[error("ldd {0} failed")]
    Ldd(PathBuf),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InitramfsError {
    let path = path.to_owned();
    move |source| InitramfsError::Io { what, path, source }
}

/// The cached image for `config`, built if missing.
///
/// `monitor` is the daemon's: there the framework reaps every child, so `ldd` must be
/// spawned through it (`Command::output` would lose the exit to the reaper). Without one
/// (the `__initramfs` mode, no reaper) `ldd` is run plainly.
pub fn ensure(config: &Config, monitor: Option<&Monitor>) -> Result<PathBuf, InitramfsError> {
    let modules_dir = Path::new("/lib/modules").join(&config.release);
    let modules = module_files(&modules_dir)?;
    let libraries = shared_libraries(&config.agent, monitor)?;
    let key = cache_key(config, &modules, &libraries)?;
    let image = config.cache_dir.join(format!("initramfs-{key}.cpio"));
    if image.is_file() {
        return Ok(image);
    }
    std::fs::create_dir_all(&config.cache_dir).map_err(io_error("create", &config.cache_dir))?;
    // Written aside and renamed: two shims building at once each produce a whole file.
    let partial = config
        .cache_dir
        .join(format!(".initramfs-{key}.{}", std::process::id()));
    let result = write_image(&partial, config, &modules_dir, &modules, &libraries)
        .and_then(|()| std::fs::rename(&partial, &image).map_err(io_error("rename", &partial)));
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result.map(|()| image)
}

/// Identifies an image by what goes in it: the files' paths, sizes and mtimes.
fn cache_key(
    config: &Config,
    modules: &[PathBuf],
    libraries: &[PathBuf],
) -> Result<String, InitramfsError> {
    let mut hash = Sha256::new();
    hash.update(config.release.as_bytes());
    for path in std::iter::once(&config.agent)
        .chain(modules)
        .chain(libraries)
    {
        let meta = std::fs::metadata(path).map_err(io_error("stat", path))?;
        hash.update(path.as_os_str().as_encoded_bytes());
        hash.update(meta.len().to_le_bytes());
        hash.update(meta.mtime().to_le_bytes());
        hash.update(meta.mtime_nsec().to_le_bytes());
    }
    let digest = hash.finalize();
    Ok(digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

fn write_image(
    path: &Path,
    config: &Config,
    modules_dir: &Path,
    modules: &[PathBuf],
    libraries: &[PathBuf],
) -> Result<(), InitramfsError> {
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_error("create", path))?;
    let mut archive = cpio::Writer::new(BufWriter::new(file));
    let write = io_error("write", path);
    let result = (|| -> std::io::Result<()> {
        for dir in ["dev", "proc", "sys", "run", "lib", "lib/modules", "tmp"] {
            archive.dir(dir, 0o755)?;
        }
        // The kernel opens /dev/console for init's stdio before anything is mounted.
        archive.char_device("dev/console", 0o600, 5, 1)?;
        let mut dirs = BTreeSet::new();
        for library in libraries {
            let inside = library.to_string_lossy().trim_start_matches('/').to_owned();
            for parent in Path::new(&inside).ancestors().skip(1) {
                let parent = parent.to_string_lossy().into_owned();
                if !parent.is_empty() && parent != "lib" && dirs.insert(parent.clone()) {
                    archive.dir(&parent, 0o755)?;
                }
            }
            archive.file(&inside, 0o755, &std::fs::read(library)?)?;
        }
        let mut order = String::new();
        for module in modules {
            let name = module
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            archive.file(
                &format!("lib/modules/{name}"),
                0o644,
                &std::fs::read(module)?,
            )?;
            order.push_str(&name);
            order.push('\n');
        }
        archive.file("lib/modules/order", 0o644, order.as_bytes())?;
        archive.file("init", 0o755, &std::fs::read(&config.agent)?)?;
        archive.finish()?.flush()
    })();
    let _ = modules_dir;
    result.map_err(write)
}

/// The `.ko` files for [`MODULES`] and their dependencies, dependencies first.
fn module_files(dir: &Path) -> Result<Vec<PathBuf>, InitramfsError> {
    let dep_path = dir.join("modules.dep");
    let deps = std::fs::read_to_string(&dep_path).map_err(io_error("read", &dep_path))?;
    // `kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko ...`, keyed by module name.
    let table: Vec<(String, Vec<String>)> = deps
        .lines()
        .filter_map(|line| {
            let (module, needs) = line.split_once(':')?;
            Some((
                module.to_owned(),
                needs.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect();
    let find = |name: &str| {
        table.iter().find(|(path, _)| {
            Path::new(path).file_name().and_then(|n| n.to_str()) == Some(&format!("{name}.ko"))
        })
    };
    let mut ordered: Vec<String> = Vec::new();
    for name in MODULES {
        let (path, needs) = find(name).ok_or_else(|| InitramfsError::Module((*name).into()))?;
        // modules.dep lists every (transitive) dependency, the deepest last: load in reverse.
        for dependency in needs.iter().rev().chain(std::iter::once(path)) {
            if !ordered.contains(dependency) {
                ordered.push(dependency.clone());
            }
        }
    }
    Ok(ordered
        .into_iter()
        .map(|relative| dir.join(relative))
        .collect())
}

/// The agent's shared libraries and loader, as `ldd` resolves them (none for a static one).
fn shared_libraries(
    agent: &Path,
    monitor: Option<&Monitor>,
) -> Result<Vec<PathBuf>, InitramfsError> {
    let mut command = Command::new("ldd");
    command
        .arg(agent)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (success, stdout, stderr) = match monitor {
        Some(monitor) => {
            let (mut child, waiter) =
                monitor
                    .spawn(&mut command)
                    .map_err(|error| InitramfsError::Io {
                        what: "run ldd on",
                        path: agent.to_owned(),
                        source: std::io::Error::other(error),
                    })?;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            // ldd's output is small: reading one pipe to its end before the other is safe.
            if let Some(mut pipe) = child.stdout.take() {
                let _ = pipe.read_to_end(&mut stdout);
            }
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_end(&mut stderr);
            }
            let success = waiter.wait().is_some_and(|exit| exit.success());
            (success, stdout, stderr)
        }
        None => {
            let output = command.output().map_err(io_error("run ldd on", agent))?;
            (output.status.success(), output.stdout, output.stderr)
        }
    };
    let text = String::from_utf8_lossy(&stdout);
    if !success {
        // ldd says "not a dynamic executable" (exit 1) for a static binary.
        let stderr = String::from_utf8_lossy(&stderr);
        if text.contains("not a dynamic") || stderr.contains("not a dynamic") {
            return Ok(Vec::new());
        }
        return Err(InitramfsError::Ldd(agent.to_owned()));
    }
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`.
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}
