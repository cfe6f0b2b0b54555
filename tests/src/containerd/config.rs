//! The config file of a private containerd without CRI, in the format of its release.

use std::fs;

use super::Containerd;
use crate::version::ConfigFormat;

/// Plugins every release is told not to load. CRI needs CNI and images, which `ctr run
/// --rootfs` does not; the snapshotters need kernel features or tools this host lacks (`ctr
/// run --rootfs` uses none). NRI is on by default from 2.0 and would serve a host-wide
/// socket (`/var/run/nri/nri.sock`) that parallel tests would fight over. Ids a release does
/// not have are ignored.
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.grpc.v1.cri",
    "io.containerd.nri.v1.nri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// 2.x split CRI into several plugins; each would otherwise load (and want CNI) on its own.
const DISABLED_PLUGINS_V3: &[&str] = &[
    "io.containerd.cri.v1.images",
    "io.containerd.cri.v1.runtime",
    "io.containerd.podsandbox.controller.v1.podsandbox",
    "io.containerd.sandbox.controller.v1.shim",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.differ.v1.erofs",
];

impl Containerd {
    pub(super) fn write_config(&self) {
        let format = self.version().config_format();
        let (version, extra) = match format {
            ConfigFormat::V2 => (2, &[][..]),
            ConfigFormat::V3 => (3, DISABLED_PLUGINS_V3),
        };
        let disabled: Vec<String> = DISABLED_PLUGINS
            .iter()
            .chain(extra)
            .map(|id| format!("  \"{id}\",\n"))
            .collect();
        let config = format!(
            r#"version = {version}
root = "{root}"
state = "{state}"
disabled_plugins = [
{disabled}]

[grpc]
  address = "{address}"

[debug]
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = self.dir.path().join("root").display(),
            state = self.state_dir().display(),
            disabled = disabled.concat(),
            address = self.address().display(),
            opt = self.dir.path().join("opt").display(),
        );
        fs::write(self.dir.path().join("config.toml"), config).expect("write containerd config");
    }
}
