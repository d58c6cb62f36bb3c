//! Validated newtypes for the lexicon `string` formats.
//!
//! A value of one of these types has passed its format's syntax rules (the
//! private module `syntax` has the rules and where they come from), so a
//! handler that receives a [`Did`] never re-checks it. Deserialising an
//! invalid string fails with an error naming the format and the value, e.g.
//! `invalid did "foo": must be did:<method>:<identifier>: ...`.
//!
//! The checks are syntax only: a well-formed DID may not resolve, a
//! well-formed handle may not exist. Equality, hashing and ordering compare
//! the string as written (handles and datetimes are not normalised).

mod syntax;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Timelike, Utc};

use crate::runtime::text::Quoted;

/// A string that does not have the syntax of its lexicon format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {format} {}: {reason}", Quoted(.value))]
pub struct FormatError {
    format: &'static str,
    value: String,
    reason: &'static str,
}

impl FormatError {
    /// The lexicon format name, e.g. `"did"` or `"at-uri"`.
    pub fn format(&self) -> &'static str {
        self.format
    }

    /// The rejected value, in full (the message shortens long values).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Defines one format newtype: construction through its syntax rule, string
/// conversions, and serde as a plain JSON string that is validated on input.
macro_rules! string_format {
    ($(#[$meta:meta])* $name:ident, $format:literal, $rule:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("The lexicon format name, `\"", $format, "\"`.")]
            pub const FORMAT: &'static str = $format;

            #[doc = concat!("Checks `value` against the `", $format, "` syntax.")]
            pub fn new(value: impl Into<String>) -> Result<Self, FormatError> {
                let value = value.into();
                match $rule(&value) {
                    Ok(()) => Ok(Self(value)),
                    Err(reason) => Err(FormatError { format: $format, value, reason }),
                }
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The validated string, by value.
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = FormatError;

            fn from_str(value: &str) -> Result<Self, FormatError> {
                Self::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = FormatError;

            fn try_from(value: String) -> Result<Self, FormatError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = FormatError;

            fn try_from(value: &str) -> Result<Self, FormatError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_format!(
    /// A DID, e.g. `did:plc:z72i7hdynmk6r22z27h6tvur` (format `did`, at most
    /// 2048 characters). Any method is accepted, not only plc and web.
    Did,
    "did",
    syntax::did
);

string_format!(
    /// A handle, e.g. `alice.bsky.social` (format `handle`, at most 253
    /// characters). Handles compare case-insensitively on the network; this
    /// type keeps the value as written.
    Handle,
    "handle",
    syntax::handle
);

string_format!(
    /// A namespaced identifier, e.g. `blue.catbird.mls.sendMessage` (format
    /// `nsid`, at most 317 characters). No `#fragment`.
    Nsid,
    "nsid",
    syntax::nsid
);

string_format!(
    /// An `at://` URI in the restricted form Lexicon uses (format `at-uri`):
    /// `at://<did or handle>[/<collection>[/<record key>]]`, no query or
    /// fragment, at most 8192 characters.
    AtUri,
    "at-uri",
    syntax::at_uri
);

string_format!(
    /// A DID or a handle (format `at-identifier`).
    AtIdentifier,
    "at-identifier",
    syntax::at_identifier
);

string_format!(
    /// A CID in string form, e.g. `bafyrei...` (format `cid`). Checked
    /// loosely, as the spec allows: 8 to 256 base-encoding characters, and not
    /// a CIDv0.
    Cid,
    "cid",
    syntax::cid
);

string_format!(
    /// A timestamp (format `datetime`), e.g. `1985-04-12T23:20:50.123Z`:
    /// RFC 3339 with uppercase `T`/`Z` and a required timezone, and a real
    /// date and time. Equality and ordering compare the text; use
    /// [`Datetime::to_chrono`] to compare instants.
    Datetime,
    "datetime",
    syntax::datetime
);

string_format!(
    /// A BCP 47 language tag, e.g. `en` or `pt-BR` (format `language`).
    Language,
    "language",
    syntax::language
);

string_format!(
    /// A timestamp identifier, 13 base32-sortable characters (format `tid`).
    Tid,
    "tid",
    syntax::tid
);

string_format!(
    /// A record key (format `record-key`): 1 to 512 characters of
    /// `A-Za-z0-9_~.:-`, and neither `.` nor `..`.
    RecordKey,
    "record-key",
    syntax::record_key
);

string_format!(
    /// A generic URI (format `uri`), e.g. `https://example.com/`: a scheme and
    /// no whitespace, at most 8192 characters.
    Uri,
    "uri",
    syntax::uri
);

impl AtIdentifier {
    /// Whether this identifier is a DID (otherwise it is a handle).
    pub fn is_did(&self) -> bool {
        self.0.starts_with("did:")
    }

    /// Whether this identifier is a handle (otherwise it is a DID).
    pub fn is_handle(&self) -> bool {
        !self.is_did()
    }
}

impl From<Did> for AtIdentifier {
    fn from(did: Did) -> Self {
        Self(did.0)
    }
}

impl From<Handle> for AtIdentifier {
    fn from(handle: Handle) -> Self {
        Self(handle.0)
    }
}

impl AtUri {
    /// The parts after `at://`: authority, then up to two path segments.
    fn parts(&self) -> std::str::SplitN<'_, char> {
        self.0
            .strip_prefix("at://")
            .unwrap_or(&self.0)
            .splitn(3, '/')
    }

    /// The DID or handle the URI points into.
    pub fn authority(&self) -> &str {
        self.parts().next().unwrap_or_default()
    }

    /// The collection NSID, if the URI has one.
    pub fn collection(&self) -> Option<&str> {
        self.parts().nth(1)
    }

    /// The record key, if the URI has one.
    pub fn rkey(&self) -> Option<&str> {
        self.parts().nth(2)
    }
}

/// The latest instant a [`Datetime`] can hold: years have four digits.
const LATEST: &str = "9999-12-31T23:59:59.999Z";
/// The earliest instant a [`Datetime`] can hold.
const EARLIEST: &str = "0000-01-01T00:00:00.000Z";

impl Datetime {
    /// The current time, in the canonical form (UTC, milliseconds, `Z`).
    pub fn now() -> Self {
        Self::from(Utc::now())
    }

    /// The instant, with the offset as written.
    ///
    /// # Panics
    ///
    /// Never: construction checked the value with this same parser.
    pub fn to_chrono(&self) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(&self.0)
            .expect("a Datetime is checked with parse_from_rfc3339 when constructed")
    }
}

impl From<DateTime<Utc>> for Datetime {
    /// Writes the canonical form, e.g. `2024-05-01T12:00:00.123Z`
    /// (millisecond precision, truncated, and `Z`). Instants outside the
    /// years 0000 to 9999 cannot be written in the format and are clamped to
    /// its first or last millisecond.
    fn from(instant: DateTime<Utc>) -> Self {
        // chrono can hold a leap second (:60); the format cannot, so it
        // becomes the last millisecond of the minute.
        let instant = if instant.nanosecond() >= 1_000_000_000 {
            instant.with_nanosecond(999_999_999).unwrap_or(instant)
        } else {
            instant
        };
        let text = match instant.year() {
            ..0 => EARLIEST.to_owned(),
            10000.. => LATEST.to_owned(),
            _ => instant.to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        Self(text)
    }
}

/// The lexicon string formats, by name, with their syntax rules.
const FORMATS: [(&str, syntax::Rule); 11] = [
    (Did::FORMAT, syntax::did),
    (Handle::FORMAT, syntax::handle),
    (Nsid::FORMAT, syntax::nsid),
    (AtUri::FORMAT, syntax::at_uri),
    (AtIdentifier::FORMAT, syntax::at_identifier),
    (Cid::FORMAT, syntax::cid),
    (Datetime::FORMAT, syntax::datetime),
    (Language::FORMAT, syntax::language),
    (Tid::FORMAT, syntax::tid),
    (RecordKey::FORMAT, syntax::record_key),
    (Uri::FORMAT, syntax::uri),
];

/// Checks `value` against the lexicon string format named `format`
/// (`"did"`, `"at-uri"`, ...). An unknown format name is an error too.
pub fn check_format(format: &str, value: &str) -> Result<(), FormatError> {
    let Some((name, rule)) = FORMATS.iter().find(|(name, _)| *name == format) else {
        return Err(FormatError {
            format: "string format name",
            value: format.to_owned(),
            reason: "not a lexicon string format",
        });
    };
    rule(value).map_err(|reason| FormatError {
        format: name,
        value: value.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde::{Deserialize, Serialize};

    #[test]
    fn constructors_and_conversions_agree() {
        let did = Did::new("did:plc:asdf123").unwrap();
        assert_eq!(did.as_str(), "did:plc:asdf123");
        assert_eq!(did, "did:plc:asdf123");
        assert_eq!(did.to_string(), "did:plc:asdf123");
        assert_eq!(did.as_ref(), "did:plc:asdf123");
        assert_eq!("did:plc:asdf123".parse::<Did>().unwrap(), did);
        assert_eq!(Did::try_from("did:plc:asdf123").unwrap(), did);
        assert_eq!(Did::try_from(String::from("did:plc:asdf123")).unwrap(), did);
        assert_eq!(String::from(did.clone()), "did:plc:asdf123");
        assert_eq!(did.into_inner(), "did:plc:asdf123");
    }

    #[test]
    fn error_names_format_value_and_reason() {
        let error = Did::new("did:METHOD:val").unwrap_err();
        assert_eq!(error.format(), "did");
        assert_eq!(error.value(), "did:METHOD:val");
        assert!(
            error
                .to_string()
                .starts_with(r#"invalid did "did:METHOD:val": "#)
        );
        assert!(error.to_string().ends_with(error.reason()));
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let nsid = Nsid::new("blue.catbird.mls.sendMessage").unwrap();
        assert_eq!(
            serde_json::to_string(&nsid).unwrap(),
            r#""blue.catbird.mls.sendMessage""#
        );
    }

    #[test]
    fn deserializing_validates() {
        let handle: Handle = serde_json::from_str(r#""alice.test""#).unwrap();
        assert_eq!(handle, "alice.test");

        let error = serde_json::from_str::<Did>(r#""foo""#).unwrap_err();
        assert!(
            error.to_string().starts_with(r#"invalid did "foo": "#),
            "{error}"
        );
        let error = serde_json::from_str::<Handle>(r#""alice.test.""#).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(r#"invalid handle "alice.test.": "#)
        );
        assert!(serde_json::from_str::<Did>("42").is_err());
    }

    #[test]
    fn deserializing_inside_a_struct_names_the_format() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Member {
            did: Did,
            joined_at: Datetime,
        }
        let member: Member =
            serde_json::from_str(r#"{"did":"did:plc:a","joined_at":"2024-01-15T12:30:00Z"}"#)
                .unwrap();
        assert_eq!(member.did, "did:plc:a");
        let error = serde_json::from_str::<Member>(
            r#"{"did":"did:plc:a","joined_at":"2024-01-15T12:30:00"}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("invalid datetime"), "{error}");
    }

    #[test]
    fn at_identifier_tells_dids_from_handles() {
        let did = AtIdentifier::new("did:plc:asdf123").unwrap();
        let handle = AtIdentifier::new("alice.test").unwrap();
        assert!(did.is_did() && !did.is_handle());
        assert!(handle.is_handle() && !handle.is_did());
        let from_did = AtIdentifier::from(Did::new("did:web:example.com").unwrap());
        assert!(from_did.is_did());
        assert!(AtIdentifier::new("alice").is_err());
    }

    #[test]
    fn at_uri_parts() {
        let full = AtUri::new("at://did:plc:asdf123/app.bsky.feed.post/3jzfcijpj2z2a").unwrap();
        assert_eq!(full.authority(), "did:plc:asdf123");
        assert_eq!(full.collection(), Some("app.bsky.feed.post"));
        assert_eq!(full.rkey(), Some("3jzfcijpj2z2a"));
        let bare = AtUri::new("at://alice.test").unwrap();
        assert_eq!(bare.authority(), "alice.test");
        assert_eq!(bare.collection(), None);
        assert_eq!(bare.rkey(), None);
    }

    #[test]
    fn datetime_converts_to_and_from_chrono() {
        let instant = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
            + chrono::Duration::nanoseconds(123_456_789);
        let datetime = Datetime::from(instant);
        assert_eq!(datetime, "2024-05-01T12:00:00.123Z");
        assert_eq!(
            datetime.to_chrono(),
            instant - chrono::Duration::nanoseconds(456_789)
        );

        let offset = Datetime::new("1985-04-12T23:20:50.123-07:00").unwrap();
        assert_eq!(offset.to_chrono().offset().local_minus_utc(), -7 * 3600);
        assert!(Datetime::new(Datetime::now().into_inner()).is_ok());
    }

    #[test]
    fn datetime_from_chrono_clamps_to_four_digit_years() {
        let far = Utc.with_ymd_and_hms(12345, 1, 1, 0, 0, 0).unwrap();
        let before = Utc.with_ymd_and_hms(-5, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(Datetime::from(far), LATEST);
        assert_eq!(Datetime::from(before), EARLIEST);
        assert!(Datetime::new(LATEST).is_ok() && Datetime::new(EARLIEST).is_ok());
    }

    #[test]
    fn datetime_from_chrono_folds_a_leap_second_into_the_minute() {
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|day| day.and_hms_milli_opt(23, 59, 59, 1_500))
            .unwrap()
            .and_utc();
        let datetime = Datetime::from(leap);
        assert_eq!(datetime, "2016-12-31T23:59:59.999Z");
        assert!(Datetime::new(datetime.into_inner()).is_ok());
    }

    #[test]
    fn check_format_dispatches_by_name() {
        let valid = [
            ("did", "did:plc:asdf123"),
            ("handle", "alice.test"),
            ("nsid", "com.example.fooBar"),
            ("at-uri", "at://alice.test/com.example.fooBar/self"),
            ("at-identifier", "alice.test"),
            (
                "cid",
                "bafyreidfayvfkicffzikfhbdrqvjobjzpmvcfc7kzbih2noclhf3vqywue",
            ),
            ("datetime", "1985-04-12T23:20:50.123Z"),
            ("language", "pt-BR"),
            ("tid", "3jzfcijpj2z2a"),
            ("record-key", "self"),
            ("uri", "https://example.com"),
        ];
        for (format, value) in valid {
            assert_eq!(check_format(format, value), Ok(()), "{format} {value}");
            let error = check_format(format, "not valid!").unwrap_err();
            assert_eq!(error.format(), format);
        }
        let unknown = check_format("colour", "red").unwrap_err();
        assert_eq!(unknown.value(), "colour");
        assert!(unknown.to_string().contains("not a lexicon string format"));
    }

    #[test]
    fn long_values_are_shortened_in_messages_but_kept_in_the_error() {
        let long = format!("did:plc:{}", "A".repeat(3000));
        let error = Did::new(long.clone()).unwrap_err();
        assert_eq!(error.value(), long);
        assert!(error.to_string().len() < 300);
    }
}
