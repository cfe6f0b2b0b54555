//! Runtime options as containerd's CRI plugin sends them to a runtime whose type is not
//! `io.containerd.runc.*`: a `runtimeoptions.v1.Options` carrying the handler's `options` table
//! as TOML, in a file (`config_path`) or inline (`config_body`, containerd 1.7 and later).
//!
//! wren reads the keys of `containerd.runc.v1.Options` from that table (`BinaryName`,
//! `SystemdCgroup`, `Root`, ...), so a wren handler is configured exactly like a runc one.
//! containerd writes the table flat (`Key = value` lines), which is all this reads: keys are
//! matched without regard to case or underscores (`BinaryName`, `binary_name`), keys it does not
//! know are logged as a warning (a typo such as `SystemdCgroups` would otherwise pass unseen;
//! the shim log reaches containerd's), and keys under a `[table]` header are not
//! top-level options, so they are skipped.

use std::io;
use std::path::PathBuf;

use wren_shim_protocol::runtimeoptions::Options as CriOptions;

use super::options::RuntimeOptions;

/// Errors from reading the handler's TOML configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read runtime config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("runtime config line {line} is not `key = value`: {text}")]
    Syntax { line: usize, text: String },
    #[error("runtime config key {key} wants {expected}, not {value}")]
    Value {
        key: String,
        expected: &'static str,
        value: String,
    },
}

/// The options `cri` points at: its file if it names one, else its inline body, else defaults.
pub fn from_cri(cri: &CriOptions) -> Result<RuntimeOptions, ConfigError> {
    let text = if !cri.config_path.is_empty() {
        let path = PathBuf::from(&cri.config_path);
        std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path, source })?
    } else {
        String::from_utf8_lossy(&cri.config_body).into_owned()
    };
    let mut options = RuntimeOptions::default();
    for key in apply(&text, &mut options)? {
        log::warn!(
            "runtime config: unknown key {key:?} ignored (wren reads the keys of \
             containerd.runc.v1.Options, such as BinaryName, Root, SystemdCgroup)"
        );
    }
    Ok(options)
}

/// Sets the options named by the top-level `key = value` lines of `toml`; returns the keys
/// that name no option.
fn apply(toml: &str, options: &mut RuntimeOptions) -> Result<Vec<String>, ConfigError> {
    let mut unknown = Vec::new();
    for (index, raw) in toml.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            // Everything after the first table header belongs to that table.
            break;
        }
        let syntax = || ConfigError::Syntax {
            line: index + 1,
            text: raw.to_owned(),
        };
        let (key, value) = line.split_once('=').ok_or_else(syntax)?;
        let key = key.trim().trim_matches('"');
        let value = Value::parse(value.trim()).ok_or_else(syntax)?;
        if set(options, key, &value)? == Key::Unknown {
            unknown.push(key.to_owned());
        }
    }
    Ok(unknown)
}

/// Whether a key named an option.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Known,
    Unknown,
}

/// A TOML scalar, as far as runtime options need them.
#[derive(Debug, PartialEq)]
enum Value {
    Text(String),
    Bool(bool),
    Integer(i64),
}

impl Value {
    /// Parses a basic or literal string, a boolean or an integer, with an optional trailing
    /// `# comment`; `None` for anything else.
    fn parse(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix('"') {
            let (body, tail) = basic_string(rest)?;
            return only_comment(tail).then_some(Self::Text(body));
        }
        if let Some(rest) = text.strip_prefix('\'') {
            let (body, tail) = rest.split_once('\'')?;
            return only_comment(tail).then(|| Self::Text(body.to_owned()));
        }
        let bare = text.split('#').next().unwrap_or_default().trim();
        match bare {
            "true" => Some(Self::Bool(true)),
            "false" => Some(Self::Bool(false)),
            _ => bare.replace('_', "").parse().ok().map(Self::Integer),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Text(text) => format!("{text:?}"),
            Self::Bool(value) => value.to_string(),
            Self::Integer(value) => value.to_string(),
        }
    }
}

/// The body of a `"..."` string whose opening quote is already consumed, and what follows it.
fn basic_string(text: &str) -> Option<(String, &str)> {
    let mut body = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((body, &text[at + 1..])),
            '\\' => body.push(match chars.next()?.1 {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                escaped @ ('"' | '\\') => escaped,
                _ => return None,
            }),
            c => body.push(c),
        }
    }
    None
}

fn only_comment(tail: &str) -> bool {
    let tail = tail.trim();
    tail.is_empty() || tail.starts_with('#')
}

/// Sets the option `key` names; keys of other consumers (`TypeUrl`, `ConfigPath`) are known
/// and ignored.
fn set(options: &mut RuntimeOptions, key: &str, value: &Value) -> Result<Key, ConfigError> {
    let wrong = |expected| ConfigError::Value {
        key: key.to_owned(),
        expected,
        value: value.describe(),
    };
    let normalized = key.replace('_', "").to_ascii_lowercase();
    let text_field = match normalized.as_str() {
        "binaryname" => Some(&mut options.binary_name),
        "root" => Some(&mut options.root),
        "shimcgroup" => Some(&mut options.shim_cgroup),
        "criupath" => Some(&mut options.criu_path),
        "criuimagepath" => Some(&mut options.criu_image_path),
        "criuworkpath" => Some(&mut options.criu_work_path),
        _ => None,
    };
    if let Some(field) = text_field {
        let Value::Text(text) = value else {
            return Err(wrong("a string"));
        };
        field.clone_from(text);
        return Ok(Key::Known);
    }
    let flag_field = match normalized.as_str() {
        "systemdcgroup" => Some(&mut options.systemd_cgroup),
        "nopivotroot" => Some(&mut options.no_pivot_root),
        "nonewkeyring" => Some(&mut options.no_new_keyring),
        _ => None,
    };
    if let Some(field) = flag_field {
        let Value::Bool(flag) = value else {
            return Err(wrong("true or false"));
        };
        *field = *flag;
        return Ok(Key::Known);
    }
    let id_field = match normalized.as_str() {
        "iouid" => Some(&mut options.io_uid),
        "iogid" => Some(&mut options.io_gid),
        _ => None,
    };
    if let Some(field) = id_field {
        let id = match value {
            Value::Integer(id) => u32::try_from(*id).ok(),
            _ => None,
        };
        *field = id.ok_or_else(|| wrong("a uid or gid"))?;
        return Ok(Key::Known);
    }
    Ok(match normalized.as_str() {
        "typeurl" | "configpath" => Key::Known,
        _ => Key::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(toml: &str) -> RuntimeOptions {
        let mut options = RuntimeOptions::default();
        let unknown = apply(toml, &mut options).unwrap();
        assert_eq!(unknown, Vec::<String>::new(), "{toml}");
        options
    }

    #[test]
    fn unknown_keys_are_reported() {
        let mut options = RuntimeOptions::default();
        let unknown = apply("SystemdCgroups = true\nRoot = \"/r\"\n", &mut options).unwrap();
        assert_eq!(unknown, ["SystemdCgroups"]);
        assert!(!options.systemd_cgroup);
    }

    #[test]
    fn containerd_style_table_sets_runc_options() {
        let options = parsed(
            "BinaryName = \"/usr/sbin/runc\"\nRoot = '/run/wren'\nSystemdCgroup = true\n\
             NoPivotRoot = false\nIoUid = 1000\nio_gid = 1_001 # the pipes' group\n\
             TypeUrl = \"io.containerd.wren.v1.Options\"\n",
        );
        assert_eq!(options.binary(), "/usr/sbin/runc");
        assert_eq!(options.root, "/run/wren");
        assert!(options.systemd_cgroup && !options.no_pivot_root);
        assert_eq!((options.io_uid, options.io_gid), (1000, 1001));
    }

    #[test]
    fn escapes_comments_and_nested_tables() {
        let options = parsed(
            "# wren handler\n\"ShimCgroup\" = \"/a \\\"b\\\"\" # quoted\n[other]\nRoot = \"/x\"\n",
        );
        assert_eq!(options.shim_cgroup, "/a \"b\"");
        assert_eq!(
            options.root, "",
            "keys under a table header are not options"
        );
    }

    #[test]
    fn malformed_lines_and_wrong_types_are_typed_errors() {
        let mut options = RuntimeOptions::default();
        assert!(matches!(
            apply("BinaryName\n", &mut options),
            Err(ConfigError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            apply("BinaryName = \"unterminated\n", &mut options),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            apply("SystemdCgroup = \"yes\"\n", &mut options),
            Err(ConfigError::Value { .. })
        ));
        assert!(matches!(
            apply("IoUid = -1\n", &mut options),
            Err(ConfigError::Value { .. })
        ));
    }

    #[test]
    fn config_path_wins_over_body_and_nothing_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wren.toml");
        std::fs::write(&file, "BinaryName = \"from-file\"\n").unwrap();
        let mut cri = CriOptions::new();
        assert_eq!(from_cri(&cri).unwrap(), RuntimeOptions::default());
        cri.config_body = b"BinaryName = \"from-body\"\n".to_vec();
        assert_eq!(from_cri(&cri).unwrap().binary(), "from-body");
        cri.config_path = file.display().to_string();
        assert_eq!(from_cri(&cri).unwrap().binary(), "from-file");
        cri.config_path = dir.path().join("missing.toml").display().to_string();
        assert!(matches!(from_cri(&cri), Err(ConfigError::Read { .. })));
    }
}
