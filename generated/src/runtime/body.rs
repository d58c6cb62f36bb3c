//! XRPC bodies that are not JSON, and the errors a method declares.

/// A request or response body with a non-JSON encoding (e.g. `*/*`,
/// `application/octet-stream`, `message/rfc822`), passed through as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody {
    /// The `Content-Type` the body was sent with or is to be sent with.
    pub content_type: String,
    /// The body itself.
    pub data: Vec<u8>,
}

impl RawBody {
    /// A body of `data` with the given content type.
    pub fn new(content_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self {
            content_type: content_type.into(),
            data: data.into(),
        }
    }
}

/// The errors a query or procedure declares in its lexicon `errors` list.
///
/// The generator emits one enum per method and implements this trait, so the
/// server writes `{"error": name, ...}` and the client maps the name back.
pub trait DeclaredError: Sized {
    /// The lexicon name of this error, e.g. `"ConvoNotFound"`.
    fn name(&self) -> &'static str;
    /// The declared error with this name, if the method declares it.
    fn from_name(name: &str) -> Option<Self>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum GetConvoError {
        ConvoNotFound,
        NotMember,
    }

    impl DeclaredError for GetConvoError {
        fn name(&self) -> &'static str {
            match self {
                Self::ConvoNotFound => "ConvoNotFound",
                Self::NotMember => "NotMember",
            }
        }

        fn from_name(name: &str) -> Option<Self> {
            match name {
                "ConvoNotFound" => Some(Self::ConvoNotFound),
                "NotMember" => Some(Self::NotMember),
                _ => None,
            }
        }
    }

    #[test]
    fn declared_errors_round_trip_by_name() {
        for error in [GetConvoError::ConvoNotFound, GetConvoError::NotMember] {
            assert_eq!(GetConvoError::from_name(error.name()), Some(error));
        }
        assert_eq!(GetConvoError::from_name("InternalServerError"), None);
    }

    #[test]
    fn raw_body_new() {
        let body = RawBody::new("application/octet-stream", b"\x00\x01".as_slice());
        assert_eq!(body.content_type, "application/octet-stream");
        assert_eq!(body.data, vec![0, 1]);
    }
}
