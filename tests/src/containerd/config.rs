//! The config file of a private containerd, in the format of its release: private paths,
//! the plugins no harness uses, and the CRI plugin's tables where its owner runs CRI.

use std::path::Path;

use super::daemon::Settings;
use crate::version::{ConfigFormat, ContainerdVersion};

/// Plugins every release is told not to load: snapshotters that need kernel features or
/// tools the hosts lack (`ctr run --rootfs` uses none; CRI uses `native`), tracing, and NRI,
/// on by default from 2.0, which would serve a host-wide socket (`/var/run/nri/nri.sock`)
/// that parallel runs would fight over. Ids a release does not have are ignored.
const DISABLED: &[&str] = &[
    "io.containerd.nri.v1.nri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// The same kind of plugins, new in 2.x.
const DISABLED_V3: &[&str] = &[
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.differ.v1.erofs",
];

/// CRI, where its owner does not run it: it needs CNI and images, which `ctr run --rootfs`
/// does not.
const CRI: &[&str] = &["io.containerd.grpc.v1.cri"];

/// 2.x split CRI into several plugins; each would otherwise load (and want CNI) on its own.
const CRI_V3: &[&str] = &[
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.sandbox.controller.v1.shim",
];

/// The config of a containerd keeping everything under `dir` and serving `address`.
pub(super) fn render(
    version: ContainerdVersion,
    dir: &Path,
    address: &Path,
    settings: &Settings,
) -> String {
    let format = version.config_format();
    let (number, format_disabled, format_cri) = match format {
        ConfigFormat::V2 => (2, &[][..], &[][..]),
        ConfigFormat::V3 => (3, DISABLED_V3, CRI_V3),
    };
    let cri_disabled = if settings.cri.is_some() {
        Vec::new()
    } else {
        [CRI, format_cri].concat()
    };
    let disabled: String = DISABLED
        .iter()
        .chain(format_disabled)
        .chain(&cri_disabled)
        .map(|id| format!("  \"{id}\",\n"))
        .collect();
    // containerd's default level is info; the tests read what it logs at debug.
    let debug = if settings.debug_log {
        "\n[debug]\n  level = \"debug\"\n"
    } else {
        ""
    };
    format!(
        r#"version = {number}
root = "{root}"
state = "{state}"
disabled_plugins = [
{disabled}]

[grpc]
  address = "{address}"
{debug}
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
{cri}"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        address = address.display(),
        opt = dir.join("opt").display(),
        cri = settings
            .cri
            .as_ref()
            .map(|tables| format!("\n{tables}"))
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(cri: Option<&str>, debug_log: bool) -> Settings {
        Settings {
            cri: cri.map(str::to_owned),
            debug_log,
            shim_dirs: Vec::new(),
            ready_within: Duration::ZERO,
        }
    }

    fn render_for(version: ContainerdVersion, settings: &Settings) -> String {
        render(
            version,
            Path::new("/d"),
            Path::new("/run/x/c.sock"),
            settings,
        )
    }

    #[test]
    fn without_cri_every_cri_plugin_is_disabled() {
        let v2 = render_for(ContainerdVersion::V1_6, &settings(None, true));
        assert!(v2.starts_with("version = 2\nroot = \"/d/root\"\nstate = \"/d/state\"\n"));
        assert!(v2.contains("\"io.containerd.grpc.v1.cri\""));
        assert!(!v2.contains("cri.v1.images"));
        assert!(v2.contains("[grpc]\n  address = \"/run/x/c.sock\"\n"));
        assert!(v2.contains("level = \"debug\""));
        let v3 = render_for(ContainerdVersion::V2_1, &settings(None, false));
        assert!(v3.starts_with("version = 3\n"));
        assert!(v3.contains("\"io.containerd.cri.v1.runtime\""));
        assert!(v3.contains("\"io.containerd.snapshotter.v1.erofs\""));
        assert!(!v3.contains("[debug]"));
    }

    #[test]
    fn cri_tables_follow_the_common_part() {
        let tables = "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"p\"\n";
        let config = render_for(ContainerdVersion::V1_7, &settings(Some(tables), true));
        assert!(!config.contains("\"io.containerd.grpc.v1.cri\","));
        assert!(config.ends_with(&format!("path = \"/d/opt\"\n\n{tables}")));
    }
}
