//! Quoting untrusted values inside error messages.
//!
//! Error messages end up in logs and in `400 InvalidRequest` bodies, so a
//! value echoed back is escaped (Debug quoting: no raw control characters or
//! newlines) and cut short (a 8 KiB URI should not become an 8 KiB message).

use std::fmt;

/// How many characters of a value an error message shows.
const SHOWN_CHARS: usize = 64;

/// Displays a value quoted and escaped, truncated to [`SHOWN_CHARS`]
/// characters with a note of the full length.
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_and_escaped() {
        assert_eq!(Quoted("a\"b\n").to_string(), r#""a\"b\n""#);
    }

    #[test]
    fn long_values_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(100);
        let shown = Quoted(&long).to_string();
        assert!(shown.starts_with(&format!("\"{}\"…", "é".repeat(SHOWN_CHARS))));
        assert!(shown.ends_with("(200 bytes)"));
    }
}
