//! The shim's command line, parsed with Go `flag` package rules.
//!
//! containerd builds the argv for a Go program: `-namespace NS -address A -id ID [-debug] start`.
//! Go's `flag` accepts `-flag value`, `-flag=value`, `--flag` and `--flag=value`; a boolean flag
//! never consumes the next argument (only `-flag=false` turns it off); parsing stops at the
//! first argument that is not a flag (the action) or right after `--`. An undefined flag is an
//! error, as in Go.

use std::path::PathBuf;

use crate::identifier;

/// Errors from parsing the command line.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    /// A flag that the shim does not define.
    #[error("flag provided but not defined: -{name}")]
    Undefined {
        /// The flag name without dashes.
        name: String,
    },
    /// A value flag at the end of argv with no value.
    #[error("flag needs an argument: -{name}")]
    MissingValue {
        /// The flag name without dashes.
        name: String,
    },
    /// A boolean flag given a value that Go's `strconv.ParseBool` rejects.
    #[error("invalid boolean value {value:?} for -{name}")]
    InvalidBool {
        /// The flag name without dashes.
        name: String,
        /// The rejected value.
        value: String,
    },
    /// A Go `flag` syntax error such as `---x` or `-=x`.
    #[error("bad flag syntax: {arg}")]
    BadSyntax {
        /// The offending argument.
        arg: String,
    },
    /// `-namespace` or `-id` breaks containerd's identifier rule; both name files and the
    /// runtime's state, so no action runs without them.
    #[error(transparent)]
    Identifier(#[from] identifier::InvalidIdentifier),
    /// No flags and no action: someone ran the binary by hand.
    #[error(
        "no arguments: containerd starts this shim itself (`-namespace NS -id ID -address A start`); \
         see -h for its flags"
    )]
    NoArguments,
    /// An action other than `start` or `delete`.
    #[error("unknown action {action:?}")]
    UnknownAction {
        /// The positional argument that was given.
        action: String,
    },
}

/// Every flag containerd (1.6 to 2.x) passes to a shim, plus `-socket`, `-v` and `-info`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `-namespace`: the containerd namespace.
    pub namespace: String,
    /// `-id`: the task (or sandbox) id.
    pub id: String,
    /// `-address`: containerd's gRPC socket path; `TTRPC_ADDRESS` is `<address>.ttrpc`.
    pub address: String,
    /// `-publish-binary`: the containerd binary (legacy event publishing; unused).
    pub publish_binary: String,
    /// `-bundle`: the bundle directory, passed to `delete` only.
    pub bundle: Option<PathBuf>,
    /// `-debug`: log at debug level.
    pub debug: bool,
    /// `-socket`: the socket address a daemon started by hand binds (`start` forks its daemon
    /// with the socket already bound).
    pub socket: Option<String>,
    /// `-v` or `-version`: print the version.
    pub version: bool,
    /// `-info`: print `containerd.types.RuntimeInfo`.
    pub info: bool,
    /// `-h` or `-help`: print the usage.
    pub help: bool,
    /// The first positional argument, if any.
    pub action: Option<String>,
}

/// What one invocation of the shim binary is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// `-h`/`-help`: print the usage, as Go's `flag` package does.
    Help,
    /// `-v`/`-version`: print a version line.
    Version,
    /// `-info`: print the runtime info protobuf.
    Info,
    /// `start`: create the socket, fork the daemon, print its address.
    Start,
    /// `delete`: clean up after a dead shim, print a `DeleteResponse`.
    Delete,
    /// No action: run as the long-lived daemon.
    Daemon,
}

/// How a flag takes its value.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Value,
}

impl Flags {
    /// Parses `args` (without the program name).
    ///
    /// # Errors
    /// Returns an error for undefined flags, missing values and malformed booleans.
    pub fn parse<I, S>(args: I) -> Result<Self, FlagsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut flags = Flags::default();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            if arg == "--" {
                flags.action = args.next();
                break;
            }
            let Some(body) = arg.strip_prefix('-').filter(|body| !body.is_empty()) else {
                flags.action = Some(arg);
                break;
            };
            let body = body.strip_prefix('-').unwrap_or(body);
            if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
                return Err(FlagsError::BadSyntax { arg });
            }
            let (name, inline) = match body.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (body.to_owned(), None),
            };
            match kind_of(&name) {
                None => return Err(FlagsError::Undefined { name }),
                Some(Kind::Bool) => {
                    let on = inline.map_or(Ok(true), |value| parse_bool(&name, value))?;
                    flags.set_bool(&name, on);
                }
                Some(Kind::Value) => {
                    let value = match inline {
                        Some(value) => value,
                        None => args
                            .next()
                            .ok_or(FlagsError::MissingValue { name: name.clone() })?,
                    };
                    flags.set_value(&name, value);
                }
            }
        }
        Ok(flags)
    }

    /// Resolves what this invocation must do; `-v` and `-info` win over any action.
    ///
    /// # Errors
    /// Returns [`FlagsError::UnknownAction`] for an action other than `start` or `delete`,
    /// and [`FlagsError::Identifier`] when `-namespace` or `-id` is not a valid identifier.
    pub fn invocation(&self) -> Result<Invocation, FlagsError> {
        if self.help {
            return Ok(Invocation::Help);
        }
        if self.version {
            return Ok(Invocation::Version);
        }
        if self.info {
            return Ok(Invocation::Info);
        }
        let invocation = match self.action.as_deref() {
            None if self.namespace.is_empty() && self.id.is_empty() => {
                return Err(FlagsError::NoArguments)
            }
            None => Invocation::Daemon,
            Some("start") => Invocation::Start,
            Some("delete") => Invocation::Delete,
            Some(other) => {
                return Err(FlagsError::UnknownAction {
                    action: other.to_owned(),
                })
            }
        };
        identifier::validate("namespace", &self.namespace)?;
        identifier::validate("id", &self.id)?;
        Ok(invocation)
    }

    fn set_bool(&mut self, name: &str, on: bool) {
        match name {
            "debug" => self.debug = on,
            "v" | "version" => self.version = on,
            "info" => self.info = on,
            "h" | "help" => self.help = on,
            _ => {}
        }
    }

    fn set_value(&mut self, name: &str, value: String) {
        match name {
            "namespace" => self.namespace = value,
            "id" => self.id = value,
            "address" => self.address = value,
            "publish-binary" => self.publish_binary = value,
            "bundle" => self.bundle = Some(PathBuf::from(value)),
            "socket" => self.socket = Some(value),
            _ => {}
        }
    }
}

fn kind_of(name: &str) -> Option<Kind> {
    match name {
        "debug" | "v" | "version" | "info" | "h" | "help" => Some(Kind::Bool),
        "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
            Some(Kind::Value)
        }
        _ => None,
    }
}

/// The `-h` text: the flags and actions, for `binary` of runtime type `runtime`.
pub fn usage(binary: &str, runtime: &str) -> String {
    format!(
        "Usage of {binary} (runtime type {runtime}):\n\
         \x20 {binary} [flags] start|delete\n\
         containerd runs it; by hand, use -v or -info.\n\n\
         \x20 -address string\tgrpc address back to main containerd\n\
         \x20 -bundle string\tpath to the bundle if not workdir\n\
         \x20 -debug\t\tenable debug output in logs\n\
         \x20 -id string\t\tid of the task\n\
         \x20 -info\t\tget the option protobuf from stdin, print the shim info and exit\n\
         \x20 -namespace string\tnamespace that owns the shim\n\
         \x20 -publish-binary string\tpath to publish binary (unused)\n\
         \x20 -socket string\tsocket path to serve\n\
         \x20 -v\t\t\tshow the shim version and exit\n"
    )
}

/// Go's `strconv.ParseBool`.
fn parse_bool(name: &str, value: String) -> Result<bool, FlagsError> {
    match value.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(FlagsError::InvalidBool {
            name: name.to_owned(),
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, FlagsError> {
        Flags::parse(args.iter().copied())
    }

    #[test]
    fn help_and_no_arguments() {
        for help in ["-h", "--help", "-help"] {
            assert_eq!(
                parse(&[help]).unwrap().invocation().unwrap(),
                Invocation::Help
            );
        }
        assert!(matches!(
            parse(&[]).unwrap().invocation(),
            Err(FlagsError::NoArguments)
        ));
        assert!(usage("shim", "io.containerd.x.v2").contains("-namespace"));
    }

    #[test]
    fn containerd_start_argv() {
        let flags = parse(&[
            "-namespace",
            "k8s.io",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(flags.namespace, "k8s.io");
        assert_eq!(flags.address, "/run/containerd/containerd.sock");
        assert_eq!(flags.publish_binary, "/usr/bin/containerd");
        assert_eq!(flags.id, "c1");
        assert!(flags.debug);
        assert_eq!(flags.invocation().unwrap(), Invocation::Start);
    }

    #[test]
    fn equals_and_double_dash_forms() {
        let flags = parse(&[
            "--namespace=ns",
            "-id=x=y",
            "--bundle",
            "/b",
            "-debug=false",
            "delete",
        ])
        .unwrap();
        assert_eq!(flags.namespace, "ns");
        assert_eq!(flags.id, "x=y");
        assert_eq!(flags.bundle, Some(PathBuf::from("/b")));
        assert!(!flags.debug);
        // Parsed as Go does, then refused: '=' has no place in an id.
        assert!(matches!(flags.invocation(), Err(FlagsError::Identifier(_))));
    }

    #[test]
    fn boolean_does_not_consume_the_action() {
        let flags = parse(&["-id", "a", "-debug", "delete"]).unwrap();
        assert!(flags.debug);
        assert_eq!(flags.action.as_deref(), Some("delete"));
    }

    #[test]
    fn parsing_stops_at_first_positional_and_after_double_dash() {
        let flags = parse(&["-id", "a", "start", "-debug"]).unwrap();
        assert!(!flags.debug, "flags after the action are not parsed");
        let flags = parse(&["-id", "a", "--", "-weird"]).unwrap();
        assert_eq!(flags.action.as_deref(), Some("-weird"));
        // A lone "-" is a positional argument in Go.
        let flags = parse(&["-"]).unwrap();
        assert_eq!(flags.action.as_deref(), Some("-"));
    }

    #[test]
    fn no_action_means_daemon_and_version_info_win() {
        assert_eq!(
            parse(&["-namespace", "ns", "-id", "a"])
                .unwrap()
                .invocation()
                .unwrap(),
            Invocation::Daemon
        );
        assert_eq!(
            parse(&["-v"]).unwrap().invocation().unwrap(),
            Invocation::Version
        );
        assert_eq!(
            parse(&["--version"]).unwrap().invocation().unwrap(),
            Invocation::Version
        );
        assert_eq!(
            parse(&["-info", "start"]).unwrap().invocation().unwrap(),
            Invocation::Info
        );
    }

    #[test]
    fn errors_are_reported() {
        assert!(
            matches!(parse(&["-bogus"]), Err(FlagsError::Undefined { name }) if name == "bogus")
        );
        assert!(matches!(parse(&["-id"]), Err(FlagsError::MissingValue { name }) if name == "id"));
        assert!(matches!(
            parse(&["-debug=maybe"]),
            Err(FlagsError::InvalidBool { .. })
        ));
        assert!(matches!(
            parse(&["---id", "x"]),
            Err(FlagsError::BadSyntax { .. })
        ));
        assert!(matches!(parse(&["-=x"]), Err(FlagsError::BadSyntax { .. })));
        let unknown = parse(&["frobnicate"]).unwrap().invocation();
        assert!(
            matches!(unknown, Err(FlagsError::UnknownAction { action }) if action == "frobnicate")
        );
    }

    #[test]
    fn every_action_needs_a_valid_namespace_and_id() {
        for argv in [
            ["-namespace", "ns", "-id", "../x", "delete"],
            ["-namespace", "a/b", "-id", "c1", "start"],
            ["-namespace", "ns", "-id", "", "start"],
        ] {
            let refused = parse(&argv).unwrap().invocation();
            assert!(
                matches!(refused, Err(FlagsError::Identifier(_))),
                "{argv:?}: {refused:?}"
            );
        }
        let flags = parse(&["-namespace", "k8s.io", "-id", "c-1.a_b", "delete"]).unwrap();
        assert_eq!(flags.invocation().unwrap(), Invocation::Delete);
    }
}
