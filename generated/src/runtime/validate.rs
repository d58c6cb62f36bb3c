//! Lexicon constraint checking.
//!
//! Deserialisation gives the right shape; constraints (`maxLength`,
//! `minimum`, `accept`, ...) are checked afterwards by a generated
//! [`Validate`] impl per type, built from the [`check`] functions. The request
//! extractor calls it, so handlers only ever see valid input.
//!
//! Errors are built from the inside out: a check fails with an empty path and
//! each enclosing level prepends its field name or index with [`ResultExt`]:
//!
//! ```
//! use catbird_generated::runtime::{ResultExt, ValidationError, check};
//!
//! fn validate_tags(tags: &[String]) -> Result<(), ValidationError> {
//!     for (i, tag) in tags.iter().enumerate() {
//!         check::max_length(tag, 8).at_index(i).at("tags")?;
//!     }
//!     Ok(())
//! }
//!
//! let tags = ["short".to_owned(), "far too long".to_owned()];
//! let error = validate_tags(&tags).unwrap_err();
//! assert_eq!(error.path(), "tags[1]");
//! assert_eq!(error.to_string(), "tags[1]: must be at most 8 bytes (UTF-8), got 12");
//! ```

pub mod check;

use std::fmt;

use crate::runtime::TriState;

/// A type whose lexicon constraints can be checked.
pub trait Validate {
    /// Checks every constraint, returning the first violation found.
    fn validate(&self) -> Result<(), ValidationError>;
}

impl<T: Validate + ?Sized> Validate for Box<T> {
    fn validate(&self) -> Result<(), ValidationError> {
        (**self).validate()
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self) -> Result<(), ValidationError> {
        self.as_ref().map_or(Ok(()), Validate::validate)
    }
}

impl<T: Validate> Validate for TriState<T> {
    fn validate(&self) -> Result<(), ValidationError> {
        self.as_option().map_or(Ok(()), Validate::validate)
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self) -> Result<(), ValidationError> {
        for (index, item) in self.iter().enumerate() {
            item.validate().at_index(index)?;
        }
        Ok(())
    }
}

/// A constraint violation: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Rendered(self))]
pub struct ValidationError {
    message: String,
    /// The path from the innermost segment outwards: prepending is a push.
    reversed_path: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Field(String),
    Index(usize),
}

impl ValidationError {
    /// A violation at the root (no path yet).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            reversed_path: Vec::new(),
        }
    }

    /// What is wrong, without the path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where, e.g. `facets[2].index.byteStart`; empty at the root.
    pub fn path(&self) -> String {
        let mut path = String::new();
        for segment in self.reversed_path.iter().rev() {
            match segment {
                Segment::Field(name) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                }
                Segment::Index(index) => {
                    path.push('[');
                    path.push_str(&index.to_string());
                    path.push(']');
                }
            }
        }
        path
    }

    /// Prepends a field name to the path.
    pub fn at(mut self, field: &str) -> Self {
        self.reversed_path.push(Segment::Field(field.to_owned()));
        self
    }

    /// Prepends an array index to the path.
    pub fn at_index(mut self, index: usize) -> Self {
        self.reversed_path.push(Segment::Index(index));
        self
    }
}

/// Display as `path: message`, or just `message` at the root.
struct Rendered<'a>(&'a ValidationError);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.0.path();
        if path.is_empty() {
            f.write_str(&self.0.message)
        } else {
            write!(f, "{path}: {}", self.0.message)
        }
    }
}

/// Adds path segments to the error of a failed check, if any.
pub trait ResultExt {
    /// Prepends a field name to the error's path.
    fn at(self, field: &str) -> Self;
    /// Prepends an array index to the error's path.
    fn at_index(self, index: usize) -> Self;
}

impl<T> ResultExt for Result<T, ValidationError> {
    fn at(self, field: &str) -> Self {
        self.map_err(|error| error.at(field))
    }

    fn at_index(self, index: usize) -> Self {
        self.map_err(|error| error.at_index(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct ByteSlice {
        byte_start: i64,
    }

    impl Validate for ByteSlice {
        fn validate(&self) -> Result<(), ValidationError> {
            check::minimum(self.byte_start, 0).at("byteStart")
        }
    }

    struct Facet {
        index: ByteSlice,
    }

    impl Validate for Facet {
        fn validate(&self) -> Result<(), ValidationError> {
            self.index.validate().at("index")
        }
    }

    struct Post {
        facets: Option<Vec<Facet>>,
        reply: Option<Box<Facet>>,
        quote: TriState<Facet>,
    }

    impl Validate for Post {
        fn validate(&self) -> Result<(), ValidationError> {
            self.facets.validate().at("facets")?;
            self.reply.validate().at("reply")?;
            self.quote.validate().at("quote")
        }
    }

    fn facet(byte_start: i64) -> Facet {
        Facet {
            index: ByteSlice { byte_start },
        }
    }

    #[test]
    fn paths_are_built_inside_out() {
        let post = Post {
            facets: Some(vec![facet(0), facet(1), facet(-1)]),
            reply: None,
            quote: TriState::Absent,
        };
        let error = post.validate().unwrap_err();
        assert_eq!(error.path(), "facets[2].index.byteStart");
        assert_eq!(error.message(), "must be >= 0, got -1");
        assert_eq!(
            error.to_string(),
            "facets[2].index.byteStart: must be >= 0, got -1"
        );
    }

    #[test]
    fn containers_validate_their_contents() {
        let valid = Post {
            facets: None,
            reply: Some(Box::new(facet(3))),
            quote: TriState::Null,
        };
        assert_eq!(valid.validate(), Ok(()));
        let reply = Post {
            facets: Some(vec![]),
            reply: Some(Box::new(facet(-5))),
            quote: TriState::Null,
        };
        assert_eq!(
            reply.validate().unwrap_err().path(),
            "reply.index.byteStart"
        );
        let quote = Post {
            facets: None,
            reply: None,
            quote: TriState::Value(facet(-5)),
        };
        assert_eq!(
            quote.validate().unwrap_err().path(),
            "quote.index.byteStart"
        );
    }

    #[test]
    fn root_errors_display_just_the_message() {
        let error = ValidationError::new("bad");
        assert_eq!(error.path(), "");
        assert_eq!(error.to_string(), "bad");
    }

    #[test]
    fn nested_indexes_need_no_dots() {
        let error = ValidationError::new("x")
            .at_index(1)
            .at_index(0)
            .at("grid")
            .at("board");
        assert_eq!(error.path(), "board.grid[0][1]");
        let error = ValidationError::new("x").at("b").at_index(3);
        assert_eq!(error.path(), "[3].b");
    }

    #[test]
    fn result_ext_leaves_ok_alone() {
        let ok: Result<u8, ValidationError> = Ok(7);
        assert_eq!(ok.at("field").at_index(2), Ok(7));
    }
}
