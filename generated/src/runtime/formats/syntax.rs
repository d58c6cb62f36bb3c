//! The syntax rules of the lexicon string formats, one function per format.
//!
//! Each rule returns the reason a value is rejected; the newtypes in the
//! parent module attach the format name and the value. Rules follow the
//! AT Protocol specs (atproto.com/specs) and, where the prose leaves room,
//! the reference implementations (the TypeScript `@atproto/syntax` package and
//! Go's `indigo/atproto/syntax`), so we accept and reject what the rest of the
//! network does. Length limits are checked before any regex so a huge input
//! costs a comparison, not a scan.

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Timelike, Utc};
use regex::Regex;

/// Why a value does not have a format's syntax.
pub(crate) type Rule = fn(&str) -> Result<(), &'static str>;

/// Compiles one of the constant patterns below. They are fixed strings, each
/// exercised by the tests, so a failure here is a programming error.
fn pattern(source: &str) -> Regex {
    match Regex::new(source) {
        Ok(regex) => regex,
        Err(error) => panic!("invalid built-in pattern {source:?}: {error}"),
    }
}

// https://atproto.com/specs/did
static DID: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$"));
// https://atproto.com/specs/handle
static HANDLE: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$",
    )
});
// https://atproto.com/specs/nsid: reversed domain authority, then a name of
// letters and digits (no hyphen, no leading digit).
static NSID: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+\.[a-zA-Z][a-zA-Z0-9]{0,62}$",
    )
});
// https://atproto.com/specs/at-uri-scheme, the restricted form Lexicon uses:
// at://AUTHORITY[/COLLECTION[/RKEY]], no query, no fragment, no trailing slash.
static AT_URI: LazyLock<Regex> = LazyLock::new(|| {
    pattern(r"^at://([a-zA-Z0-9._:%-]+)(?:/([a-zA-Z0-9.-]+)(?:/([a-zA-Z0-9._~:-]+))?)?$")
});
// https://atproto.com/specs/data-model#link-and-cid-formats: a loose check of
// the string form; decoding the multibase/multihash is not a syntax concern.
static CID: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[a-zA-Z0-9+=]{8,256}$"));
// https://atproto.com/specs/lexicon#datetime: RFC 3339 ∩ ISO 8601 ∩ WHATWG,
// uppercase T and Z, seconds required, timezone required.
static DATETIME: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"^[0-9]{4}-(0[1-9]|1[012])-([0-2][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
    )
});
// RFC 5646 section 2.1 (well-formed BCP 47), as the reference implementation
// spells it: the primary language subtag is lowercase.
static LANGUAGE: LazyLock<Regex> = LazyLock::new(|| {
    pattern(concat!(
        r"^(?:",
        r"en-GB-oed|i-ami|i-bnn|i-default|i-enochian|i-hak|i-klingon|i-lux|i-mingo|i-navajo|i-pwn|i-tao|i-tay|i-tsu|sgn-BE-FR|sgn-BE-NL|sgn-CH-DE",
        r"|art-lojban|cel-gaulish|no-bok|no-nyn|zh-guoyu|zh-hakka|zh-min|zh-min-nan|zh-xiang",
        r"|[a-z]{2,3}(?:-[A-Za-z]{3}(?:-[A-Za-z]{3}){0,2})?",
        r"(?:-[A-Za-z]{4})?",
        r"(?:-(?:[A-Za-z]{2}|[0-9]{3}))?",
        r"(?:-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*",
        r"(?:-[0-9A-WY-Za-wy-z](?:-[A-Za-z0-9]{2,8})+)*",
        r"(?:-[xX](?:-[A-Za-z0-9]{1,8})+)?",
        r"|[xX](?:-[A-Za-z0-9]{1,8})+",
        r")$",
    ))
});
// https://atproto.com/specs/tid: 13 base32-sortable characters; the first is
// limited so the top bit of the 64-bit value is zero.
static TID: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$"));
// https://atproto.com/specs/record-key
static RECORD_KEY: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[a-zA-Z0-9_~.:-]{1,512}$"));
// https://atproto.com/specs/lexicon#uri: any RFC 3986 URI. Like the reference
// implementation this is a shape check: a scheme, then no whitespace.
static URI: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[a-zA-Z][a-zA-Z0-9+.-]*:(//)?[^\s/][^\s]*$"));

pub(crate) fn did(value: &str) -> Result<(), &'static str> {
    if value.len() > 2048 {
        return Err("longer than 2048 characters");
    }
    if !DID.is_match(value) {
        return Err(
            "must be did:<method>:<identifier>: a lowercase method, then ASCII letters, digits and ._:%- not ending in : or %",
        );
    }
    Ok(())
}

pub(crate) fn handle(value: &str) -> Result<(), &'static str> {
    if value.len() > 253 {
        return Err("longer than 253 characters");
    }
    if !HANDLE.is_match(value) {
        return Err(
            "must be a domain name: two or more dot-separated labels of ASCII letters, digits and inner hyphens, the last starting with a letter",
        );
    }
    Ok(())
}

pub(crate) fn nsid(value: &str) -> Result<(), &'static str> {
    if value.len() > 317 {
        return Err("longer than 317 characters");
    }
    if !NSID.is_match(value) {
        return Err(
            "must be a reversed domain name and a name of letters and digits, e.g. com.example.fooBar",
        );
    }
    Ok(())
}

pub(crate) fn at_identifier(value: &str) -> Result<(), &'static str> {
    if value.starts_with("did:") {
        did(value)
    } else {
        handle(value)
    }
}

pub(crate) fn at_uri(value: &str) -> Result<(), &'static str> {
    if value.len() > 8192 {
        return Err("longer than 8192 characters");
    }
    let Some(parts) = AT_URI.captures(value) else {
        return Err(
            "must be at://<did or handle>[/<collection NSID>[/<record key>]] without query, fragment or trailing slash",
        );
    };
    if let Some(authority) = parts.get(1)
        && at_identifier(authority.as_str()).is_err()
    {
        return Err("authority is neither a DID nor a handle");
    }
    if let Some(collection) = parts.get(2)
        && nsid(collection.as_str()).is_err()
    {
        return Err("collection is not an NSID");
    }
    if let Some(rkey) = parts.get(3)
        && record_key(rkey.as_str()).is_err()
    {
        return Err("record key is not valid");
    }
    Ok(())
}

pub(crate) fn cid(value: &str) -> Result<(), &'static str> {
    if !CID.is_match(value) {
        return Err("must be 8 to 256 characters of ASCII letters, digits, + and =");
    }
    if value.starts_with("Qmb") {
        return Err("CIDv0 is not allowed in atproto");
    }
    Ok(())
}

pub(crate) fn datetime(value: &str) -> Result<(), &'static str> {
    if value.len() > 64 {
        return Err("longer than 64 characters");
    }
    if value.ends_with("-00:00") {
        return Err("\"-00:00\" is not allowed; write UTC as Z or +00:00");
    }
    if !DATETIME.is_match(value) {
        return Err(
            "must be YYYY-MM-DDTHH:MM:SS[.fraction] followed by Z or +HH:MM/-HH:MM (uppercase T and Z)",
        );
    }
    // The pattern cannot know month lengths or leap years.
    let Ok(parsed) = DateTime::parse_from_rfc3339(value) else {
        return Err("not a real calendar date and time");
    };
    // chrono marks a :60 second as nanoseconds past one second. JSON clients
    // (JavaScript's Date among them) cannot represent it, so neither do we.
    if parsed.nanosecond() >= 1_000_000_000 {
        return Err("leap seconds (:60) are not accepted");
    }
    if !(0..=9999).contains(&parsed.with_timezone(&Utc).year()) {
        return Err("in UTC the year must be between 0000 and 9999");
    }
    Ok(())
}

pub(crate) fn language(value: &str) -> Result<(), &'static str> {
    if !LANGUAGE.is_match(value) {
        return Err("must be a well-formed BCP 47 language tag, e.g. en, pt-BR, zh-Hant");
    }
    if language_repeats_subtag(value) {
        return Err("repeats a variant or an extension singleton");
    }
    Ok(())
}

/// RFC 5646 section 2.2.5 and 2.2.6: a variant, and an extension singleton,
/// may not appear twice (case-insensitively). A regex cannot count, so this
/// walks the subtags of a tag that already matched [`LANGUAGE`].
fn language_repeats_subtag(tag: &str) -> bool {
    let mut subtags = tag.split('-').peekable();
    // Grandfathered "i-..." tags and private-use "x-..." tags have neither.
    if !subtags
        .next()
        .is_some_and(|primary| (2..=3).contains(&primary.len()))
    {
        return false;
    }
    let letters = |subtag: &str, len: usize| {
        subtag.len() == len && subtag.bytes().all(|b| b.is_ascii_alphabetic())
    };
    let alphanumeric = |subtag: &str| subtag.bytes().all(|b| b.is_ascii_alphanumeric());
    let digits = |subtag: &str, len: usize| {
        subtag.len() == len && subtag.bytes().all(|b| b.is_ascii_digit())
    };
    // Skip up to three extlangs, a script and a region.
    for _ in 0..3 {
        if subtags.next_if(|s| letters(s, 3)).is_none() {
            break;
        }
    }
    subtags.next_if(|s| letters(s, 4));
    subtags.next_if(|s| letters(s, 2) || digits(s, 3));

    let is_variant = |s: &&str| {
        alphanumeric(s)
            && ((5..=8).contains(&s.len())
                || (s.len() == 4 && s.starts_with(|c: char| c.is_ascii_digit())))
    };
    let mut variants = HashSet::new();
    while let Some(variant) = subtags.next_if(is_variant) {
        if !variants.insert(variant.to_ascii_lowercase()) {
            return true;
        }
    }
    let is_singleton = |s: &&str| s.len() == 1 && alphanumeric(s) && !s.eq_ignore_ascii_case("x");
    let mut singletons = HashSet::new();
    while let Some(singleton) = subtags.next_if(is_singleton) {
        if !singletons.insert(singleton.to_ascii_lowercase()) {
            return true;
        }
        while subtags
            .next_if(|s| (2..=8).contains(&s.len()) && alphanumeric(s))
            .is_some()
        {}
    }
    false
}

pub(crate) fn tid(value: &str) -> Result<(), &'static str> {
    if !TID.is_match(value) {
        return Err("must be 13 characters of 234567a-z, the first one of 234567abcdefghij");
    }
    Ok(())
}

pub(crate) fn record_key(value: &str) -> Result<(), &'static str> {
    if value == "." || value == ".." {
        return Err("\".\" and \"..\" are not allowed");
    }
    if !RECORD_KEY.is_match(value) {
        return Err("must be 1 to 512 characters of ASCII letters, digits and _~.:-");
    }
    Ok(())
}

pub(crate) fn uri(value: &str) -> Result<(), &'static str> {
    if value.len() > 8192 {
        return Err("longer than 8192 characters");
    }
    if !URI.is_match(value) {
        return Err("must be a URI: a scheme, a colon, then no whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Examples come from the atproto specs and the interop test vectors
    //! (bluesky-social/atproto-interop-tests, syntax/).

    use super::*;

    fn accepts(rule: Rule, values: &[&str]) {
        for value in values {
            assert_eq!(rule(value), Ok(()), "should accept {value:?}");
        }
    }

    fn rejects(rule: Rule, values: &[&str]) {
        for value in values {
            assert!(rule(value).is_err(), "should reject {value:?}");
        }
    }

    #[test]
    fn did_syntax() {
        accepts(
            did,
            &[
                "did:plc:z72i7hdynmk6r22z27h6tvur",
                "did:web:blueskyweb.xyz",
                "did:method:val:two",
                "did:m:v",
                "did:method::::val",
                "did:method:-:_:.",
                "did:key:zQ3shZc2QzApp2oymGvQbzP8eKheVshBHbU4ZYjeXqwSKEn6N",
                "did:method:val%BB",
                "did:web:localhost%3A1234",
            ],
        );
        rejects(
            did,
            &[
                "did:METHOD:val",
                "did:m123:val",
                "DID:method:val",
                "did:method:",
                "did:method:val:",
                "did:method:val%",
                "did:method:val/two",
                "did:method:val?two",
                "did:method:val#two",
                "did:",
                "did:method",
                "did::val",
                "did:method:va l",
                "did:method:vál",
                "random",
                "",
            ],
        );
    }

    #[test]
    fn did_length_limit() {
        let prefix = "did:plc:";
        let at_limit = format!("{prefix}{}", "a".repeat(2048 - prefix.len()));
        accepts(did, &[&at_limit]);
        rejects(did, &[&format!("{at_limit}a")]);
    }

    #[test]
    fn handle_syntax() {
        accepts(
            handle,
            &[
                "jay.bsky.social",
                "8.cn",
                "name.t--t",
                "XX.LCS.MIT.EDU",
                "a.co",
                "xn--notarealidn.com",
                "xn--fiqa61au8b7zsevnm8ak20mc4a87e.xn--fiqs8s",
                "example.t",
                "jo-hn.test",
                "a.b.c.d.e.f.g",
                "laptop.local",
            ],
        );
        rejects(
            handle,
            &[
                "jay.bsky.social.",
                ".jay.bsky.social",
                "jo@hn.test",
                "💩.test",
                "john..test",
                "xn--bcher-.tld",
                "john.0",
                "cn.8",
                "www.masełkowski.pl.com",
                "org",
                "-john.test",
                "john-.test",
                "john.test-",
                "jo_hn.test",
                "",
            ],
        );
    }

    #[test]
    fn handle_length_limits() {
        let label = "a".repeat(63);
        accepts(handle, &[&format!("{label}.test")]);
        rejects(handle, &[&format!("a{label}.test")]);
        // 4 labels of 63 plus 3 dots is 255; trim to exactly 253 and 254.
        let long = [label.as_str(); 4].join(".");
        accepts(handle, &[&long[2..]]);
        rejects(handle, &[&long[1..]]);
    }

    #[test]
    fn nsid_syntax() {
        accepts(
            nsid,
            &[
                "com.example.fooBar",
                "net.users.bob.ping",
                "a-0.b-1.c",
                "a.b.c",
                "com.example.fooBarV2",
                "cn.8.lex.stuff",
                "blue.catbird.mls.sendMessage",
            ],
        );
        rejects(
            nsid,
            &[
                "com.example",
                "com.example.3",
                "com.example.foo-bar",
                "com.exa💩ple.thing",
                "com.example.foo*",
                "com..example.foo",
                "com.example.foo.",
                ".com.example.foo",
                "1com.example.foo",
                "-com.example.foo",
                "com.example.fooBar#main",
                "",
            ],
        );
    }

    #[test]
    fn nsid_length_limit() {
        let label = "a".repeat(63);
        let authority = [label.as_str(); 4].join("."); // 255 characters
        let at_limit = format!("{}.{}", &authority[2..], label); // 253 + 1 + 63
        assert_eq!(at_limit.len(), 317);
        accepts(nsid, &[&at_limit]);
        rejects(nsid, &[&format!("{}.{}", &authority[1..], label)]);
    }

    #[test]
    fn at_identifier_is_did_or_handle() {
        accepts(at_identifier, &["did:plc:asdf123", "alice.test"]);
        rejects(
            at_identifier,
            &["alice", "@alice.test", "did:UPPER:x", "did:plc:", ""],
        );
    }

    #[test]
    fn at_uri_syntax() {
        accepts(
            at_uri,
            &[
                "at://did:plc:asdf123",
                "at://user.bsky.social",
                "at://did:plc:asdf123/com.atproto.feed.post",
                "at://did:plc:asdf123/com.atproto.feed.post/record",
                "at://did:plc:asdf123/com.atproto.feed.post/asdf-123",
                "at://did:web:example.com/io.nsid.someFunc/record-key",
                "at://did:web:example.com/io.nsid.someFunc/self.",
                "at://did:web:example.com/io.nsid.someFunc/lang:",
                "at://did:web:example.com/io.nsid.someFunc/:",
                "at://did:web:example.com/io.nsid.someFunc/-",
                "at://did:web:example.com/io.nsid.someFunc/_",
                "at://did:web:example.com/io.nsid.someFunc/~",
                "at://did:web:example.com/io.nsid.someFunc/...",
                "at://did:plc:asdf123/com.atproto.feed.postV2",
                &format!(
                    "at://did:plc:asdf123/com.atproto.feed.post/{}",
                    "o".repeat(512)
                ),
            ],
        );
        rejects(
            at_uri,
            &[
                "a://did:plc:asdf123",
                "at//did:plc:asdf123",
                "at:/did:plc:asdf123",
                "at:///did:plc:asdf123",
                "at://",
                "at://did:plc:asdf123/",
                "at://did:plc:asdf123/com.atproto.feed.post/",
                "at://did:plc:asdf123/com.atproto.feed.post/asdf123/more",
                "at://did:plc:asdf123/short",
                "at://did:plc:asdf123/com.atproto.feed.post/asdf123?x=1",
                "at://did:plc:asdf123#/frag",
                "at://did:plc:asdf123/com.atproto.feed.post/.",
                "at://did:plc:asdf123/com.atproto.feed.post/..",
                "at://name/com.atproto.feed.post/x",
                "at://did:plc:asdf123/com.atproto.feed.post/a b",
                "https://example.com",
                &format!(
                    "at://did:plc:asdf123/com.atproto.feed.post/{}",
                    "o".repeat(513)
                ),
            ],
        );
    }

    #[test]
    fn cid_syntax() {
        accepts(
            cid,
            &[
                "bafyreidfayvfkicffzikfhbdrqvjobjzpmvcfc7kzbih2noclhf3vqywue",
                "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4",
                "QmTaz7NNmzzvdMmgD8tEQ2iHgw1bMiDpQh4QSjazeJQDEs",
                &"a".repeat(8),
                &"a".repeat(256),
            ],
        );
        rejects(
            cid,
            &[
                "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR",
                "bafyrei",
                "bafy reidfayvfkicffzikfhbdrqvjobjzpmvcfc7kzbih2noclhf3vqywue",
                "bafyrei-dfayvfkicffzikfhbdrqvjobjzpmvcfc7kzbih2noclhf3vqywue",
                &"a".repeat(257),
                "",
            ],
        );
    }

    #[test]
    fn datetime_syntax() {
        accepts(
            datetime,
            &[
                "1985-04-12T23:20:50.123Z",
                "1985-04-12T23:20:50.123456Z",
                "1985-04-12T23:20:50.1Z",
                "1985-04-12T23:20:50Z",
                "1985-04-12T23:20:50.123+00:00",
                "1985-04-12T23:20:50.123-07:00",
                "1985-04-12T23:20:50.123+01:45",
                "1985-04-12T23:20:50.1235678912345Z",
                "0985-04-12T23:20:50.123Z",
                "2024-02-29T00:00:00Z",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999Z",
            ],
        );
        rejects(
            datetime,
            &[
                "1985-04-12T23:20:50.123",
                "1985-04-12T23:20:50.123-00:00",
                "1985-04-12t23:20:50.123Z",
                "1985-04-12T23:20:50.123z",
                "1985-04-12 23:20:50.123Z",
                "1985-04-12T23:20Z",
                "1985-04-12",
                "1985-04-12T23:20:50.Z",
                "1985-04-12T23:20:50.123+0000",
                "1985-04-12T23:20:50.123Z ",
                "85-04-12T23:20:50.123Z",
                "1985-4-12T23:20:50.123Z",
                "+001985-04-12T23:20:50.123Z",
                // valid shape, not a real date or time
                "1985-02-30T00:00:00Z",
                "2023-02-29T00:00:00Z",
                "1985-00-12T23:20:50.123Z",
                "1985-04-00T23:20:50.123Z",
                "1985-13-12T23:20:50.123Z",
                "1985-04-12T25:20:50.123Z",
                "1985-04-12T23:99:50.123Z",
                "1985-04-12T23:20:61.123Z",
                "1985-04-12T23:20:60Z",
                // outside years 0000..=9999 once converted to UTC
                "0000-01-01T00:00:00+01:00",
                "9999-12-31T23:00:00-02:00",
                "",
            ],
        );
    }

    #[test]
    fn datetime_rejections_say_why() {
        let why = |value| datetime(value).unwrap_err();
        assert!(why("1985-04-12T23:20:50.123").contains("followed by Z or"));
        assert!(why("1985-04-12T23:20:50.123-00:00").contains("-00:00"));
        assert_eq!(
            why("1985-02-30T00:00:00Z"),
            "not a real calendar date and time"
        );
        assert_eq!(
            why("1985-04-12T23:20:60Z"),
            "leap seconds (:60) are not accepted"
        );
        assert!(why("0000-01-01T00:00:00+01:00").contains("between 0000 and 9999"));
    }

    #[test]
    fn datetime_length_limit() {
        let base = "1985-04-12T23:20:50.";
        let at_limit = format!("{base}{}Z", "1".repeat(64 - base.len() - 1));
        accepts(datetime, &[&at_limit]);
        rejects(
            datetime,
            &[&format!("{base}{}Z", "1".repeat(64 - base.len()))],
        );
    }

    #[test]
    fn language_syntax() {
        accepts(
            language,
            &[
                "ja",
                "ban",
                "pt-BR",
                "en-GB",
                "zh-Hant",
                "hy-Latn-IT-arevela",
                "de-DE-1901",
                "de-419",
                "sgn-BE-NL",
                "i-default",
                "zh-min-nan",
                "x-private",
                "en-US-x-twain",
                "en-a-foo-b-bar",
            ],
        );
        rejects(
            language,
            &[
                "jaja",
                ".",
                "123",
                "JA",
                "j",
                "ja-",
                "a-DE",
                "ja_JP",
                "de-DE-1901-1901",
                "en-rozaj-ROZAJ",
                "en-a-foo-a-bar",
                "en-u-co-phonebk-U-ca-buddhist",
                "",
            ],
        );
    }

    #[test]
    fn tid_syntax() {
        accepts(
            tid,
            &[
                "3jzfcijpj2z2a",
                "7777777777777",
                "3zzzzzzzzzzzz",
                "2222222222222",
            ],
        );
        rejects(
            tid,
            &[
                "3jzfcijpj2z2",
                "3jzfcijpj2z2aa",
                "3jzfcijpj2z21",
                "3JZFCIJPJ2Z2A",
                "kjzfcijpj2z2a",
                "zzzzzzzzzzzzz",
                "3jzfcijpj2z2a\n",
                "",
            ],
        );
    }

    #[test]
    fn record_key_syntax() {
        accepts(
            record_key,
            &[
                "3jui7kd54zh2y",
                "self",
                "example.com",
                "~1.2-3_",
                "dHJ1ZQ",
                "pre:fix",
                "_",
                "...",
                &"a".repeat(512),
            ],
        );
        rejects(
            record_key,
            &[
                ".",
                "..",
                "alpha/beta",
                "#extra",
                "@handle",
                "any space",
                "any+space",
                "number[3]",
                "number(3)",
                "\"quote\"",
                "dHJ1ZQ==",
                "",
                &"a".repeat(513),
            ],
        );
    }

    #[test]
    fn uri_syntax() {
        accepts(
            uri,
            &[
                "https://example.com",
                "https://example.com/path?q=1#frag",
                "at://did:plc:asdf123/com.example.post/self",
                "did:plc:asdf123",
                "mailto:user@example.com",
                "dns:example.com",
                "https://пример.рф/",
            ],
        );
        rejects(
            uri,
            &[
                "example.com",
                "https://example.com/with space",
                ":nothing",
                "https://",
                "https:///path",
                "1http://example.com",
                "",
                &format!("https://example.com/{}", "a".repeat(8192)),
            ],
        );
    }
}
