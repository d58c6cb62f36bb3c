//! One function per lexicon constraint, called by generated `validate()`s.
//!
//! Each returns an error with an empty path whose message names the limit
//! and the actual value; the caller adds the path. Units follow the lexicon
//! spec: `maxLength`/`minLength` on strings count UTF-8 bytes, on bytes count
//! bytes, on arrays count items; `maxGraphemes`/`minGraphemes` count extended
//! grapheme clusters (what a person sees as one character).

use unicode_segmentation::UnicodeSegmentation;

use crate::runtime::text::Quoted;
use crate::runtime::{Blob, Bytes, ValidationError};

type Checked = Result<(), ValidationError>;

/// `usize` to `u64` without a lossy cast (lossless on every real target).
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn fail(message: String) -> Checked {
    Err(ValidationError::new(message))
}

/// String `maxLength`: at most `max` UTF-8 bytes.
pub fn max_length<S: AsRef<str> + ?Sized>(value: &S, max: u64) -> Checked {
    let len = count(value.as_ref().len());
    if len > max {
        return fail(format!("must be at most {max} bytes (UTF-8), got {len}"));
    }
    Ok(())
}

/// String `minLength`: at least `min` UTF-8 bytes.
pub fn min_length<S: AsRef<str> + ?Sized>(value: &S, min: u64) -> Checked {
    let len = count(value.as_ref().len());
    if len < min {
        return fail(format!("must be at least {min} bytes (UTF-8), got {len}"));
    }
    Ok(())
}

fn graphemes(value: &str) -> u64 {
    count(value.graphemes(true).count())
}

/// String `maxGraphemes`: at most `max` extended grapheme clusters.
pub fn max_graphemes<S: AsRef<str> + ?Sized>(value: &S, max: u64) -> Checked {
    let value = value.as_ref();
    // Every grapheme takes at least one byte, so short strings need no count.
    if count(value.len()) <= max {
        return Ok(());
    }
    let found = graphemes(value);
    if found > max {
        return fail(format!("must be at most {max} graphemes, got {found}"));
    }
    Ok(())
}

/// String `minGraphemes`: at least `min` extended grapheme clusters.
pub fn min_graphemes<S: AsRef<str> + ?Sized>(value: &S, min: u64) -> Checked {
    let found = graphemes(value.as_ref());
    if found < min {
        return fail(format!("must be at least {min} graphemes, got {found}"));
    }
    Ok(())
}

/// Integer `minimum` (inclusive).
pub fn minimum(value: i64, min: i64) -> Checked {
    if value < min {
        return fail(format!("must be >= {min}, got {value}"));
    }
    Ok(())
}

/// Integer `maximum` (inclusive).
pub fn maximum(value: i64, max: i64) -> Checked {
    if value > max {
        return fail(format!("must be <= {max}, got {value}"));
    }
    Ok(())
}

/// Array `minLength`: at least `min` items.
pub fn min_items(len: usize, min: u64) -> Checked {
    let len = count(len);
    if len < min {
        return fail(format!("must have at least {min} items, got {len}"));
    }
    Ok(())
}

/// Array `maxLength`: at most `max` items.
pub fn max_items(len: usize, max: u64) -> Checked {
    let len = count(len);
    if len > max {
        return fail(format!("must have at most {max} items, got {len}"));
    }
    Ok(())
}

/// Bytes `minLength`: at least `min` bytes.
pub fn bytes_min_length(value: &Bytes, min: u64) -> Checked {
    let len = count(value.0.len());
    if len < min {
        return fail(format!("must be at least {min} bytes, got {len}"));
    }
    Ok(())
}

/// Bytes `maxLength`: at most `max` bytes.
pub fn bytes_max_length(value: &Bytes, max: u64) -> Checked {
    let len = count(value.0.len());
    if len > max {
        return fail(format!("must be at most {max} bytes, got {len}"));
    }
    Ok(())
}

/// String `enum`: one of the listed values.
pub fn one_of_str<S: AsRef<str> + ?Sized>(value: &S, allowed: &[&str]) -> Checked {
    let value = value.as_ref();
    if !allowed.contains(&value) {
        return fail(format!(
            "must be one of: {}; got {}",
            allowed.join(", "),
            Quoted(value)
        ));
    }
    Ok(())
}

/// Integer `enum`: one of the listed values.
pub fn one_of_int(value: i64, allowed: &[i64]) -> Checked {
    if !allowed.contains(&value) {
        let allowed: Vec<String> = allowed.iter().map(i64::to_string).collect();
        return fail(format!(
            "must be one of: {}; got {value}",
            allowed.join(", ")
        ));
    }
    Ok(())
}

/// String `const`.
pub fn const_str<S: AsRef<str> + ?Sized>(value: &S, expected: &str) -> Checked {
    let value = value.as_ref();
    if value != expected {
        return fail(format!(
            "must be {}, got {}",
            Quoted(expected),
            Quoted(value)
        ));
    }
    Ok(())
}

/// Integer `const`.
pub fn const_int(value: i64, expected: i64) -> Checked {
    if value != expected {
        return fail(format!("must be {expected}, got {value}"));
    }
    Ok(())
}

/// Boolean `const`.
pub fn const_bool(value: bool, expected: bool) -> Checked {
    if value != expected {
        return fail(format!("must be {expected}, got {value}"));
    }
    Ok(())
}

/// Blob `accept`: the MIME type matches one of the patterns (see
/// [`Blob::matches_accept`]). An empty list accepts nothing; a lexicon
/// without `accept` simply has no such check.
pub fn blob_accept(blob: &Blob, accept: &[&str]) -> Checked {
    if !accept.iter().any(|pattern| blob.matches_accept(pattern)) {
        return fail(format!(
            "blob MIME type {} is not accepted (accepted: {})",
            Quoted(&blob.mime_type),
            accept.join(", ")
        ));
    }
    Ok(())
}

/// Blob `maxSize` in bytes. A legacy blob, whose size is unknown, passes:
/// its size cannot be checked from the reference alone, and the blob itself
/// was size-checked when it was uploaded.
pub fn blob_max_size(blob: &Blob, max: u64) -> Checked {
    match blob.size_known() {
        Some(size) if size > max => fail(format!("blob must be at most {max} bytes, got {size}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Cid, CidLink};

    fn passes(result: Checked) {
        assert_eq!(result, Ok(()));
    }

    fn fails(result: Checked, message: &str) {
        let error = result.unwrap_err();
        assert_eq!(error.message(), message);
        assert_eq!(error.path(), "");
    }

    #[test]
    fn string_length_counts_utf8_bytes() {
        passes(max_length("abc", 3));
        fails(
            max_length("abcd", 3),
            "must be at most 3 bytes (UTF-8), got 4",
        );
        passes(max_length("é", 2)); // U+00E9 is 2 bytes
        fails(max_length("é", 1), "must be at most 1 bytes (UTF-8), got 2");
        passes(max_length("👍", 4)); // 4 bytes, 1 grapheme
        fails(
            max_length("👍", 3),
            "must be at most 3 bytes (UTF-8), got 4",
        );
        passes(min_length("é", 2));
        fails(
            min_length("e", 2),
            "must be at least 2 bytes (UTF-8), got 1",
        );
        passes(max_length(&String::from("ab"), 2));
    }

    #[test]
    fn graphemes_count_what_people_see() {
        let combining = "e\u{301}"; // e + combining acute: 1 grapheme, 3 bytes
        passes(max_graphemes(combining, 1));
        fails(
            max_graphemes(&format!("{combining}{combining}"), 1),
            "must be at most 1 graphemes, got 2",
        );
        let family = "👨\u{200d}👩\u{200d}👧\u{200d}👦"; // ZWJ sequence: 1 grapheme, 25 bytes
        passes(max_graphemes(family, 1));
        fails(
            max_graphemes(&format!("{family}a"), 1),
            "must be at most 1 graphemes, got 2",
        );
        passes(min_graphemes(family, 1));
        fails(
            min_graphemes(family, 2),
            "must be at least 2 graphemes, got 1",
        );
        passes(min_graphemes(&format!("{combining}{combining}"), 2));
        fails(min_graphemes("", 1), "must be at least 1 graphemes, got 0");
        passes(max_graphemes("abc", 3));
        fails(
            max_graphemes("abcd", 3),
            "must be at most 3 graphemes, got 4",
        );
    }

    #[test]
    fn integer_bounds_are_inclusive() {
        passes(minimum(0, 0));
        fails(minimum(-1, 0), "must be >= 0, got -1");
        passes(maximum(100, 100));
        fails(maximum(101, 100), "must be <= 100, got 101");
        passes(minimum(i64::MIN, i64::MIN));
        passes(maximum(i64::MAX, i64::MAX));
    }

    #[test]
    fn array_lengths() {
        passes(min_items(1, 1));
        fails(min_items(0, 1), "must have at least 1 items, got 0");
        passes(max_items(10, 10));
        fails(max_items(11, 10), "must have at most 10 items, got 11");
    }

    #[test]
    fn bytes_lengths() {
        let four = Bytes(vec![0; 4]);
        passes(bytes_min_length(&four, 4));
        fails(
            bytes_min_length(&four, 5),
            "must be at least 5 bytes, got 4",
        );
        passes(bytes_max_length(&four, 4));
        fails(bytes_max_length(&four, 3), "must be at most 3 bytes, got 4");
    }

    #[test]
    fn enums() {
        passes(one_of_str("b", &["a", "b"]));
        fails(
            one_of_str("c", &["a", "b"]),
            r#"must be one of: a, b; got "c""#,
        );
        passes(one_of_int(2, &[1, 2]));
        fails(one_of_int(3, &[1, 2]), "must be one of: 1, 2; got 3");
    }

    #[test]
    fn constants() {
        passes(const_str("x", "x"));
        fails(const_str("y", "x"), r#"must be "x", got "y""#);
        passes(const_int(1, 1));
        fails(const_int(2, 1), "must be 1, got 2");
        passes(const_bool(true, true));
        fails(const_bool(false, true), "must be true, got false");
    }

    fn blob(mime_type: &str, size: i64) -> Blob {
        let cid = Cid::new("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4").unwrap();
        Blob {
            r#ref: CidLink(cid),
            mime_type: mime_type.to_owned(),
            size,
        }
    }

    #[test]
    fn blob_accept_patterns() {
        passes(blob_accept(&blob("image/png", 1), &["image/png"]));
        passes(blob_accept(
            &blob("image/webp", 1),
            &["video/mp4", "image/*"],
        ));
        passes(blob_accept(&blob("application/x-anything", 1), &["*/*"]));
        fails(
            blob_accept(&blob("text/plain", 1), &["image/png", "image/*"]),
            r#"blob MIME type "text/plain" is not accepted (accepted: image/png, image/*)"#,
        );
        assert!(blob_accept(&blob("image/png", 1), &[]).is_err());
    }

    #[test]
    fn blob_size_limit() {
        passes(blob_max_size(&blob("image/png", 1000), 1000));
        fails(
            blob_max_size(&blob("image/png", 1001), 1000),
            "blob must be at most 1000 bytes, got 1001",
        );
        // Legacy blob: size unknown, passes.
        passes(blob_max_size(&blob("image/png", -1), 0));
    }
}
