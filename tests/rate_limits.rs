//! Rate limits (server/ratelimit.rs) over real HTTP: past a caller's budget
//! requests get 429 `RateLimitExceeded` with `Retry-After` while other
//! callers go on; getKeyPackages has its own, stricter budget; tokens that
//! do not verify never spend the budget of the DID they name; a client
//! address's budget cuts off a flood before any token is looked at, by the
//! connection's address or a trusted proxy's header.

mod common;

use catbird_generated::lexicons::blue::catbird::mls::{
    get_key_package_status, get_key_packages, publish_key_package,
};
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use catbird_generated::runtime::xrpc::reqwest::{RequestBuilder, Url};
use catbird_mls::auth::{self, LocalIdentity};
use common::metrics;
use common::mls::{Device, SUITE_NAME};
use common::{SERVICE_DID, TestApp};
use serde_json::{Value, json};
use sqlx::PgPool;

const STATUS: &str = get_key_package_status::NSID;
const FETCH: &str = get_key_packages::NSID;
const PUBLISH: &str = publish_key_package::NSID;

/// The status and JSON body of a request, with Retry-After on a 429.
async fn send(request: RequestBuilder) -> (StatusCode, Value, Option<u64>) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let body = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    (status, body, retry_after)
}

/// getKeyPackageStatus (a query) of `user`'s phone, with `token`.
fn status_request(app: &TestApp, user: &LocalIdentity, token: Option<String>) -> RequestBuilder {
    let url = Url::parse_with_params(
        &app.url(&format!("/xrpc/{STATUS}")),
        [("deviceId", format!("{}#phone", user.did.as_str()))],
    )
    .unwrap();
    let request = app.http().get(url);
    match token {
        Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
        None => request,
    }
}

fn fetch_request(app: &TestApp, caller: &LocalIdentity, of: &LocalIdentity) -> RequestBuilder {
    let url = Url::parse_with_params(
        &app.url(&format!("/xrpc/{FETCH}")),
        [("dids", of.did.as_str()), ("cipherSuite", SUITE_NAME)],
    )
    .unwrap();
    app.http().get(url).header(
        AUTHORIZATION,
        format!("Bearer {}", app.token(caller, FETCH)),
    )
}

fn assert_limited((status, body, retry_after): (StatusCode, Value, Option<u64>)) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "RateLimitExceeded", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(
        retry_after.is_some_and(|seconds| seconds >= 1),
        "{retry_after:?}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn past_its_budget_a_caller_gets_429_and_others_go_on(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn_with(pool, |config| config.rate_limit_read = 3).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let before = metrics::scrape(&app).await;

    for _ in 0..3 {
        let token = app.token(&alice, STATUS);
        let (status, body, _) = send(status_request(&app, &alice, Some(token))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_limited(
        send(status_request(
            &app,
            &alice,
            Some(app.token(&alice, STATUS)),
        ))
        .await,
    );

    for _ in 0..3 {
        let token = app.token(&bob, STATUS);
        let (status, body, _) = send(status_request(&app, &bob, Some(token))).await;
        assert_eq!(status, StatusCode::OK, "bob has his own budget: {body}");
    }
    let after = metrics::scrape(&app).await;
    let labels = [("class", "read"), ("scope", "caller")];
    let rejected = after.count("rate_limit_rejections_total", &labels)
        - before.count("rate_limit_rejections_total", &labels);
    assert_eq!(rejected, 1.0);
}

#[sqlx::test(migrations = "./migrations")]
async fn key_package_fetches_have_a_stricter_budget_of_their_own(pool: PgPool) {
    // With the default settings.
    let defaults = common::test_config(std::path::Path::new("unused"));
    assert!(defaults.rate_limit_key_package_fetch < defaults.rate_limit_read);
    let app = TestApp::spawn(pool).await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    for _ in 0..defaults.rate_limit_key_package_fetch {
        let (status, body, _) = send(fetch_request(&app, &alice, &bob)).await;
        // Bob has published nothing: 404 NoKeyPackages, but a fetch all the same.
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    assert_limited(send(fetch_request(&app, &alice, &bob)).await);

    // Her other queries are unaffected.
    let token = app.token(&alice, STATUS);
    let (status, body, _) = send(status_request(&app, &alice, Some(token))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[sqlx::test(migrations = "./migrations")]
async fn tokens_that_do_not_verify_never_spend_the_named_callers_budget(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.rate_limit_write = 2).await;
    let (alice, mallory) = (app.user("alice"), app.user("mallory"));
    // Mallory signs tokens that claim to be Alice's.
    let forger = LocalIdentity {
        did: alice.did.clone(),
        ..mallory.clone()
    };
    let audience = catbird_generated::runtime::Did::new(SERVICE_DID).unwrap();
    let publish = |user: &LocalIdentity, token: String| {
        let body = json!({ "keyPackage": Device::new(&user.did, "phone").key_package() });
        app.http()
            .post(app.url(&format!("/xrpc/{PUBLISH}")))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap())
    };
    for _ in 0..10 {
        let forged = auth::mint_token(
            &forger,
            &audience,
            PUBLISH,
            std::time::Duration::from_secs(60),
        );
        let (status, body, _) = send(publish(&alice, forged)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    // Alice's whole budget is still hers.
    for _ in 0..2 {
        let (status, body, _) = send(publish(&alice, app.token(&alice, PUBLISH))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_limited(send(publish(&alice, app.token(&alice, PUBLISH))).await);
}

#[sqlx::test(migrations = "./migrations")]
async fn an_address_flooding_without_valid_tokens_is_cut_off_before_auth(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.rate_limit_ip_read = 5).await;
    let alice = app.user("alice");
    for _ in 0..5 {
        let (status, body, _) = send(status_request(&app, &alice, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // From this address even a valid token waits now.
    let token = app.token(&alice, STATUS);
    assert_limited(send(status_request(&app, &alice, Some(token))).await);
}

#[sqlx::test(migrations = "./migrations")]
async fn behind_a_proxy_the_address_comes_from_its_header(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| {
        config.rate_limit_ip_read = 2;
        config.client_ip_header = Some("x-forwarded-for".into());
    })
    .await;
    let alice = app.user("alice");
    let from = |address: &str| {
        let token = app.token(&alice, STATUS);
        // The proxy appends the address it saw; what the client wrote
        // before it is not trusted.
        status_request(&app, &alice, Some(token))
            .header("x-forwarded-for", format!("198.51.100.7, {address}"))
    };
    for _ in 0..2 {
        let (status, body, _) = send(from("203.0.113.1")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_limited(send(from("203.0.113.1")).await);
    let (status, body, _) = send(from("203.0.113.2")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another client behind the same proxy: {body}"
    );
}
