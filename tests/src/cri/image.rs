//! OCI image archives built on the spot, for `ctr images import`.
//!
//! No image registry is reachable from the test hosts, and the CRI plugin only runs images
//! it has in its store, so each test builds its images: one uncompressed layer holding a
//! busybox-static rootfs, a config whose `rootfs.diff_ids` names that layer, a manifest,
//! and an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) packed as a tar.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::bundle::busybox_rootfs;
use crate::containerd::{output_text, run_with_deadline, sha256_hex, CTR_DEADLINE};

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// containerd's own annotation for the full image name; `ctr images import` in 1.6 names
/// the image after it (the OCI `ref.name` annotation alone holds only the tag).
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An image to build: its full reference and what it runs.
#[derive(Debug, Clone, Copy)]
pub struct ImageRecipe<'a> {
    /// A full reference, `docker.io/<repo>:<tag>`, as CRI normalizes names.
    pub reference: &'a str,
    /// The config's `Entrypoint` (argv of the container process unless CRI overrides it).
    pub entrypoint: &'a [&'a str],
}

/// A descriptor of a blob in the layout: what `index.json` and manifests point at.
#[derive(Debug)]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: usize,
}

impl Descriptor {
    fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// Builds the image in `recipe` under `work_dir` and returns the path of its archive.
pub fn build_image_archive(work_dir: &Path, recipe: ImageRecipe<'_>) -> PathBuf {
    let tag = recipe
        .reference
        .rsplit_once(':')
        .map_or("latest", |(_, tag)| tag);
    let dir_name: String = recipe
        .reference
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let work = work_dir.join(dir_name);
    let layout = work.join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).expect("create image layout");

    let rootfs = busybox_rootfs(&work);
    let layer_tar = work.join("layer.tar");
    tar_directory(&rootfs, &layer_tar);
    let layer = add_blob(
        &layout,
        LAYER_MEDIA_TYPE,
        &fs::read(&layer_tar).expect("read layer tar"),
    );
    // An uncompressed layer's diff id is its digest.
    let config = image_config(recipe.entrypoint, &layer.digest);
    let config = add_blob(&layout, CONFIG_MEDIA_TYPE, &to_bytes(&config));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.to_json(),
        "layers": [layer.to_json()],
    });
    let manifest = add_blob(&layout, MANIFEST_MEDIA_TYPE, &to_bytes(&manifest));

    let mut entry = manifest.to_json();
    entry["annotations"] = json!({
        CONTAINERD_NAME_ANNOTATION: recipe.reference,
        OCI_REF_NAME_ANNOTATION: tag,
    });
    entry["platform"] = json!({"architecture": oci_architecture(), "os": "linux"});
    let index = json!({"schemaVersion": 2, "manifests": [entry]});
    fs::write(layout.join("index.json"), to_bytes(&index)).expect("write index.json");
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");

    let archive = work.join("image.tar");
    tar_directory(&layout, &archive);
    archive
}

fn image_config(entrypoint: &[&str], layer_digest: &str) -> Value {
    json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
}

/// Stores `bytes` as `blobs/sha256/<hex>` and describes it.
fn add_blob(layout: &Path, media_type: &'static str, bytes: &[u8]) -> Descriptor {
    let hex = sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).expect("write blob");
    Descriptor {
        media_type,
        digest: format!("sha256:{hex}"),
        size: bytes.len(),
    }
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize image json")
}

/// Packs the contents of `dir` (not `dir` itself) into the tar file `archive`.
fn tar_directory(dir: &Path, archive: &Path) {
    let mut tar = Command::new("tar");
    tar.arg("--create")
        .arg("--file")
        .arg(archive)
        .arg("--directory")
        .arg(dir);
    tar.args(["--owner=0", "--group=0", "--numeric-owner", "."])
        .stdin(Stdio::null());
    let output = run_with_deadline(&mut tar, CTR_DEADLINE);
    assert!(
        output.status.success(),
        "tar {}: {}",
        dir.display(),
        output_text(&output)
    );
}

/// This host's architecture as OCI names it: CRI only runs images for its own platform.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
