//! Faults an operator or an attacker brings: hostile input (U+0000 in
//! strings, tokens of the wrong type or issuer, oversized request targets
//! and headers), connections that idle, dribble their headers or stall
//! their bodies, the service killed with SIGKILL under load, and its
//! PostgreSQL stopped under load. Each test prints its counts.

mod connections;
mod crash;
mod database;
mod input;
mod load;

/// A response's body as JSON.
async fn json_body(
    response: catbird_generated::runtime::xrpc::reqwest::Response,
) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}
