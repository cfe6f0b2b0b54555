//! `--runtime-options`: `key=value,...` or a JSON object, into `containerd.runc.v1.Options`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use wren_manager::protocol::runc::Options;

/// Parses `text` (a JSON object when it starts with `{`).
pub fn parse(text: &str) -> Result<Options> {
    let mut options = Options::default();
    let text = text.trim();
    if text.starts_with('{') {
        let object: serde_json::Map<String, Value> =
            serde_json::from_str(text).context("runtime options are not a JSON object")?;
        for (key, value) in object {
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            set(&mut options, &key, &value)?;
        }
    } else {
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("{pair:?} is not key=value"))?;
            set(&mut options, key.trim(), value.trim())?;
        }
    }
    Ok(options)
}

fn set(options: &mut Options, key: &str, value: &str) -> Result<()> {
    let flag = || -> Result<bool> {
        value
            .parse()
            .with_context(|| format!("{key} must be true or false"))
    };
    let number = || -> Result<u32> {
        value
            .parse()
            .with_context(|| format!("{key} must be a number"))
    };
    // Accept containerd's TOML spellings (BinaryName) as well as the proto ones.
    match key.replace('_', "").to_lowercase().as_str() {
        "binaryname" => options.binary_name = value.into(),
        "root" => options.root = value.into(),
        "systemdcgroup" => options.systemd_cgroup = flag()?,
        "nopivotroot" => options.no_pivot_root = flag()?,
        "nonewkeyring" => options.no_new_keyring = flag()?,
        "shimcgroup" => options.shim_cgroup = value.into(),
        "iouid" => options.io_uid = number()?,
        "iogid" => options.io_gid = number()?,
        "criuworkpath" => options.criu_work_path = value.into(),
        "criuimagepath" => options.criu_image_path = value.into(),
        _ => bail!("unknown runtime option {key:?}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_json_give_the_same_options() {
        let pairs = parse("binary_name=crun,systemd_cgroup=false,root=/tmp/r").unwrap();
        let json = parse(r#"{"BinaryName":"crun","SystemdCgroup":false,"root":"/tmp/r"}"#).unwrap();
        assert_eq!(pairs, json);
        assert_eq!(pairs.binary_name, "crun");
        assert!(parse("bogus=1").is_err());
        assert!(parse("systemd_cgroup=maybe").is_err());
    }
}
