//! Generates the protobuf messages and sync ttrpc services from `protos/` into `OUT_DIR`.
//!
//! Nothing is written to the source tree. Besides the generated files, this writes
//! `OUT_DIR/generated.rs`, a module index with absolute `#[path]`s, because the index files
//! the generators can emit carry inner attributes that `include!` cannot take.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Proto files holding only messages and enums.
const MESSAGE_PROTOS: &[&str] = &[
    "mount",
    "process",
    "event",
    "platform",
    "introspection",
    "task_events",
    "runc_options",
    "cri_runtime_options",
    "cgroups_v1_metrics",
    "cgroups_v2_metrics",
    "bootstrap",
];

/// Proto files that also declare a ttrpc service.
const SERVICE_PROTOS: &[&str] = &["shim", "events_service", "vm_agent"];

fn main() -> std::io::Result<()> {
    let out_dir =
        PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "OUT_DIR is not set")
        })?);
    let protos = Path::new("protos");
    println!("cargo:rerun-if-changed=protos");
    println!("cargo:rerun-if-changed=build.rs");

    let inputs: Vec<PathBuf> = MESSAGE_PROTOS
        .iter()
        .chain(SERVICE_PROTOS)
        .map(|stem| protos.join(format!("{stem}.proto")))
        .collect();

    ttrpc_codegen::Codegen::new()
        .out_dir(&out_dir)
        .include(protos)
        .inputs(&inputs)
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: false,
            async_client: false,
            async_server: false,
            gen_mod: false,
        })
        .run()?;

    std::fs::write(out_dir.join("generated.rs"), module_index(&out_dir))
}

/// One `pub mod` per generated file, pinned to its absolute path in `out_dir`.
fn module_index(out_dir: &Path) -> String {
    let stems = MESSAGE_PROTOS.iter().map(|stem| (*stem).to_owned()).chain(
        SERVICE_PROTOS
            .iter()
            .flat_map(|stem| [(*stem).to_owned(), format!("{stem}_ttrpc")]),
    );
    let mut index = String::new();
    for stem in stems {
        let path = out_dir.join(format!("{stem}.rs"));
        // Writing to a String cannot fail.
        let _ = writeln!(
            index,
            "#[path = {:?}]\npub mod {stem};",
            path.display().to_string()
        );
    }
    index
}
