//! containerd's identifier rule, for every id a shim joins into a path or hands to a runtime.
//!
//! containerd validates namespaces, container ids and exec ids with this rule before they reach
//! a shim, but a shim also runs under other managers and by hand, and it writes files named
//! after these ids (`<bundle>/<exec id>.pid`, the runtime's `<root>/<namespace>/<id>`): an id
//! like `../x` must never get that far.

/// The longest identifier containerd accepts.
pub const MAX_LENGTH: usize = 76;

/// An id that breaks containerd's identifier rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {what} {value:?}: want 1 to {MAX_LENGTH} letters and digits, \
     single '.', '_' or '-' only between them"
)]
pub struct InvalidIdentifier {
    /// What the id names (`container id`, `exec id`, `namespace`).
    pub what: &'static str,
    /// The rejected value.
    pub value: String,
}

/// Checks `value` against containerd's rule: alphanumeric runs joined by single `.`, `_` or
/// `-`, at most [`MAX_LENGTH`] bytes. `what` names the id in the error.
///
/// # Errors
/// [`InvalidIdentifier`] when the rule is broken.
pub fn validate(what: &'static str, value: &str) -> Result<(), InvalidIdentifier> {
    let separator = |b: u8| matches!(b, b'.' | b'_' | b'-');
    let bytes = value.as_bytes();
    let well_formed = !bytes.is_empty()
        && bytes.len() <= MAX_LENGTH
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || separator(b))
        && !separator(bytes[0])
        && !separator(bytes[bytes.len() - 1])
        && !bytes
            .windows(2)
            .any(|pair| separator(pair[0]) && separator(pair[1]));
    if well_formed {
        Ok(())
    } else {
        Err(InvalidIdentifier {
            what,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_identifiers_pass() {
        let longest = "a".repeat(MAX_LENGTH);
        for id in ["c1", "k8s.io", "default", "my_ctr-2.b", "A9", &longest] {
            assert_eq!(validate("id", id), Ok(()), "{id}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_its_name() {
        let too_long = "a".repeat(MAX_LENGTH + 1);
        for id in [
            "", ".", "..", "../x", "a/b", "/abs", "-a", "a-", "a..b", "a._b", "a b", "é", "a\0b",
            &too_long,
        ] {
            let err = validate("exec id", id).unwrap_err();
            assert_eq!(err.what, "exec id");
            assert!(err.to_string().starts_with("invalid exec id"), "{err}");
        }
    }
}
