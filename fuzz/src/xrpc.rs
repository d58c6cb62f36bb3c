//! Query strings and JSON bodies, decoded by the generated runtime the way
//! the router does before any handler runs (`parse_params`,
//! `InputBody::decode`), for every method of `blue.catbird.mls`. Any input
//! must decode or be refused with a 4xx; what decodes must survive a
//! round trip through the client's encoder unchanged (so client and
//! server read the same request).
//!
//! An input is the method's NSID on the first line, then the query string
//! or the body.

use catbird_generated::lexicons::blue::catbird::mls::{
    ROUTES, add_members, commit_group_change, confirm_welcome, create_convo, get_convos, get_epoch,
    get_expected_conversations, get_group_info, get_key_package_status, get_key_packages,
    get_messages, get_subscription_ticket, get_welcome, leave_convo, process_external_commit,
    publish_key_package, publish_key_packages, remove_member, send_ephemeral, send_message,
    subscribe_convo_events,
};
use catbird_generated::runtime::xrpc::{
    InputBody, Params, Route, XrpcError, encode_params, parse_params,
};

use crate::mutate::split_first_line;
use crate::{Outcome, Shape, Target, Violation};

/// Decodes one request part for one route: `Ok(true)` if it decoded and
/// round-tripped, `Ok(false)` if it decoded but came back different.
type Decoder = fn(&Route, &[u8]) -> Result<bool, XrpcError>;

fn params_of<P: Params + PartialEq>(route: &Route, query: &[u8]) -> Result<bool, XrpcError> {
    let query = String::from_utf8_lossy(query);
    let params: P = parse_params(route, Some(&query))?;
    let again: P = parse_params(route, Some(&encode_params(route, &params)?))?;
    Ok(again == params)
}

fn body_of<I: InputBody + PartialEq>(route: &Route, body: &[u8]) -> Result<bool, XrpcError> {
    let input = I::decode(
        route,
        Some("application/json"),
        bytes::Bytes::copy_from_slice(body),
    )?;
    let Some((content_type, encoded)) = input.encode(route)? else {
        return Ok(false);
    };
    let again = I::decode(route, Some(&content_type), encoded.into())?;
    Ok(again == input)
}

/// Every method with parameters: (route, decoder, a valid query string).
const PARAMS: &[(&Route, Decoder, &str)] = &[
    (
        &get_convos::ROUTE,
        params_of::<get_convos::Params>,
        "limit=50&cursor=abc",
    ),
    (
        &get_epoch::ROUTE,
        params_of::<get_epoch::Params>,
        "convoId=c0ffee",
    ),
    (
        &get_expected_conversations::ROUTE,
        params_of::<get_expected_conversations::Params>,
        "deviceId=did%3Aplc%3Aalice%23phone&limit=10",
    ),
    (
        &get_group_info::ROUTE,
        params_of::<get_group_info::Params>,
        "convoId=c0ffee",
    ),
    (
        &get_key_package_status::ROUTE,
        params_of::<get_key_package_status::Params>,
        "deviceId=did%3Aplc%3Aalice%23phone&cipherSuite=MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
    ),
    (
        &get_key_packages::ROUTE,
        params_of::<get_key_packages::Params>,
        "dids=did%3Aplc%3Aalice&dids=did%3Aweb%3Abob.test&cipherSuite=MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519&convoId=c0ffee",
    ),
    (
        &get_messages::ROUTE,
        params_of::<get_messages::Params>,
        "convoId=c0ffee&sinceSeq=3&limit=100",
    ),
    (
        &get_welcome::ROUTE,
        params_of::<get_welcome::Params>,
        "convoId=c0ffee&deviceId=did%3Aplc%3Aalice%23phone",
    ),
    (
        &subscribe_convo_events::ROUTE,
        params_of::<subscribe_convo_events::Params>,
        "deviceId=did%3Aplc%3Aalice%23phone&ticket=0123456789abcdef0123",
    ),
];

/// Every procedure with a JSON input: (route, decoder, a valid body).
const BODIES: &[(&Route, Decoder, &str)] = &[
    (
        &add_members::ROUTE,
        body_of::<add_members::Input>,
        r#"{"convoId":"c0ffee","commit":{"$bytes":"AAEC"},"welcome":{"$bytes":"AAED"},"groupInfo":{"$bytes":"AAEE"},"idempotencyKey":"k1"}"#,
    ),
    (
        &commit_group_change::ROUTE,
        body_of::<commit_group_change::Input>,
        r#"{"convoId":"c0ffee","commit":{"$bytes":"AAEC"},"groupInfo":{"$bytes":"AAEE"}}"#,
    ),
    (
        &confirm_welcome::ROUTE,
        body_of::<confirm_welcome::Input>,
        r#"{"convoId":"c0ffee","deviceId":"did:plc:alice#phone","success":false,"errorDetails":"no KeyPackage"}"#,
    ),
    (
        &create_convo::ROUTE,
        body_of::<create_convo::Input>,
        r#"{"groupId":"c0ffee","cipherSuite":"MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519","groupInfo":{"$bytes":"AAEE"},"metadata":{"name":"Lunch","description":"Fridays"}}"#,
    ),
    (
        &get_subscription_ticket::ROUTE,
        body_of::<get_subscription_ticket::Input>,
        r#"{"deviceId":"did:plc:alice#phone"}"#,
    ),
    (
        &leave_convo::ROUTE,
        body_of::<leave_convo::Input>,
        r#"{"convoId":"c0ffee","proposal":{"$bytes":"AAEF"}}"#,
    ),
    (
        &process_external_commit::ROUTE,
        body_of::<process_external_commit::Input>,
        r#"{"convoId":"c0ffee","externalCommit":{"$bytes":"AAEC"},"groupInfo":{"$bytes":"AAEE"},"idempotencyKey":"k2"}"#,
    ),
    (
        &publish_key_package::ROUTE,
        body_of::<publish_key_package::Input>,
        r#"{"keyPackage":{"$bytes":"AAEG"}}"#,
    ),
    (
        &publish_key_packages::ROUTE,
        body_of::<publish_key_packages::Input>,
        r#"{"keyPackages":[{"$bytes":"AAEG"},{"$bytes":"AAEH"}]}"#,
    ),
    (
        &remove_member::ROUTE,
        body_of::<remove_member::Input>,
        r#"{"convoId":"c0ffee","did":"did:plc:bob","commit":{"$bytes":"AAEC"},"groupInfo":{"$bytes":"AAEE"},"ban":true}"#,
    ),
    (
        &send_ephemeral::ROUTE,
        body_of::<send_ephemeral::Input>,
        r#"{"convoId":"c0ffee","ciphertext":{"$bytes":"AAEI"},"epoch":2}"#,
    ),
    (
        &send_message::ROUTE,
        body_of::<send_message::Input>,
        r#"{"convoId":"c0ffee","msgId":"m1","ciphertext":{"$bytes":"AAEI"},"epoch":2,"paddedSize":512,"idempotencyKey":"k3"}"#,
    ),
];

/// One of the two targets: the table it runs over.
struct Decoding {
    name: &'static str,
    shape: Shape,
    table: &'static [(&'static Route, Decoder, &'static str)],
    seeds: Vec<Vec<u8>>,
}

impl Decoding {
    fn new(
        name: &'static str,
        shape: Shape,
        table: &'static [(&'static Route, Decoder, &'static str)],
    ) -> Self {
        let seeds = table
            .iter()
            .map(|(route, _, example)| format!("{}\n{example}", route.nsid).into_bytes())
            .collect();
        Self {
            name,
            shape,
            table,
            seeds,
        }
    }

    fn dictionary(&self) -> Vec<Vec<u8>> {
        let mut words: Vec<Vec<u8>> = ROUTES
            .iter()
            .flat_map(|route| {
                route
                    .params
                    .iter()
                    .map(|param| param.name)
                    .chain(route.input_fields.iter().copied())
                    .chain([route.nsid])
            })
            .map(|word| word.as_bytes().to_vec())
            .collect();
        words.extend(
            ["$bytes", "$type", "did:plc:", "#", "%23", "%00"].map(|w| w.as_bytes().to_vec()),
        );
        words
    }

    fn check(&self, input: &[u8]) -> Result<Outcome, Violation> {
        let (nsid, rest) = split_first_line(input);
        let Some((route, decode, _)) = self
            .table
            .iter()
            .find(|(route, ..)| route.nsid.as_bytes() == nsid)
        else {
            // The router answers an unknown method before decoding anything.
            return Ok(Outcome::Refused);
        };
        match decode(route, rest) {
            Ok(true) => Ok(Outcome::Accepted),
            Ok(false) => Err(Violation(format!(
                "{}: decoded, but encoding and decoding again gave something else",
                route.nsid
            ))),
            Err(error) if error.status().is_client_error() => Ok(Outcome::Refused),
            Err(error) => Err(Violation(format!(
                "{}: refused with {} {}: {}",
                route.nsid,
                error.status(),
                error.error(),
                error.message()
            ))),
        }
    }
}

macro_rules! decoding_target {
    ($type:ident, $name:literal, $shape:expr, $table:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $type(Decoding);

        impl $type {
            pub fn new() -> Self {
                Self(Decoding::new($name, $shape, $table))
            }
        }

        impl Default for $type {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Target for $type {
            fn name(&self) -> &'static str {
                self.0.name
            }
            fn seeds(&self) -> &[Vec<u8>] {
                &self.0.seeds
            }
            fn shape(&self) -> Shape {
                self.0.shape
            }
            fn dictionary(&self) -> Vec<Vec<u8>> {
                self.0.dictionary()
            }
            fn check(&self, input: &[u8]) -> Result<Outcome, Violation> {
                self.0.check(input)
            }
        }
    };
}

decoding_target!(
    ParamsTarget,
    "params",
    Shape::NsidAndQuery,
    PARAMS,
    "Query strings of every query and subscription."
);
decoding_target!(
    BodyTarget,
    "body",
    Shape::NsidAndJson,
    BODIES,
    "JSON bodies of every procedure."
);
