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
pub mod client;
pub mod error;
pub mod frames;
pub mod params;
pub mod route;
pub mod server;
pub mod unknown_frames;

#[cfg(test)]
mod tests;

pub use body::{InputBody, OutputBody};
pub use client::{ClientError, EventStream, XrpcClient};
pub use error::{MethodError, XrpcError};
pub use frames::{
    EventMessage, FrameHeader, OP_ERROR, OP_MESSAGE, decode_frame_body, encode_frame,
    encode_frame_body, split_frame,
};
pub use params::{Params, encode_params, parse_params};
pub use route::{MethodKind, Param, ParamKind, Route};
pub use server::{
    BodyLimit, DEFAULT_BODY_LIMIT, Intercept, ResponseObserver, SubscriptionStream, XrpcService,
    body_limit_layer, finish, procedure, query, subscription,
};
pub use unknown_frames::{decode_unknown_frame, encode_unknown_frame_body, unknown_frame_type};

/// Re-exported so generated routers (and crates built on them) can name
/// axum without their own dependency, at the version this runtime uses.
pub use axum;
/// Re-exported for subscription streams.
pub use futures_util;
/// Re-exported for `XrpcService::authenticate`'s `http::request::Parts`.
pub use http;
/// Re-exported for `XrpcClient::with_http_client`.
pub use reqwest;
