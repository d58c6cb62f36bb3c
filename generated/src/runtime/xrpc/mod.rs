//! The XRPC runtime: what the generated handler traits, routers and clients
//! call.
//!
//! | module | job |
//! |---|---|
//! | [`route`] | a method as data: NSID, kind, parameter table, encodings |
//! | [`error`] | the `{"error", "message"}` bodies, runtime and declared |
//! | [`params`] | strict query strings from the parameter table |
//! | [`body`] | JSON, raw and empty bodies; Content-Type rules |
//! | [`server`] | axum method routers, auth and intercept hooks, fallback, body limit |
//! | [`frames`] | DAG-CBOR event-stream frames |
//! | [`client`] | a typed HTTP + WebSocket client |

pub mod body;
#[cfg(feature = "client")]
pub mod client;
pub mod error;
pub mod frames;
pub mod params;
pub mod route;
#[cfg(feature = "server")]
pub mod server;
pub mod unknown_frames;

#[cfg(all(test, feature = "client", feature = "server"))]
mod tests;

pub use body::refuse_nul_in_json;
pub use body::{InputBody, OutputBody};
#[cfg(feature = "client")]
pub use client::{ClientError, EventStream, TokenError, XrpcClient};
pub use error::{MethodError, XrpcError};
pub use frames::{
    EventMessage, FrameHeader, OP_ERROR, OP_MESSAGE, decode_frame_body, encode_frame,
    encode_frame_body, split_frame,
};
pub use params::{NoParams, Params, encode_params, parse_params, refuse_nul_in_query};
pub use route::{MethodKind, Param, ParamKind, Route};
#[cfg(feature = "server")]
pub use server::{
    BodyLimit, BodyTimeout, DEFAULT_BODY_LIMIT, Intercept, ResponseObserver, SubscriptionStream,
    XrpcService, body_limit_layer, body_timeout_layer, finish, procedure, query, subscription,
};
pub use unknown_frames::{decode_unknown_frame, encode_unknown_frame_body, unknown_frame_type};

/// Re-exported so generated routers (and crates built on them) can name
/// axum without their own dependency, at the version this runtime uses.
#[cfg(feature = "server")]
pub use axum;
/// Re-exported for subscription streams.
pub use futures_util;
/// Re-exported for `XrpcService::authenticate`'s `http::request::Parts`.
pub use http;
/// Re-exported for `XrpcClient::with_http_client`.
#[cfg(feature = "client")]
pub use reqwest;
