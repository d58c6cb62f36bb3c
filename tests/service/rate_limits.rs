//! Rate limits (server/ratelimit.rs) over real HTTP: past a caller's budget
//! requests get 429 `RateLimitExceeded` with `Retry-After` while other
//! callers go on; getKeyPackages has its own, stricter budget, counted in
//! users asked for; tokens that do not verify never spend the budget of the
//! DID they name; an address that keeps failing authentication is cut off
//! before its tokens are checked (by the connection's address, or a trusted
//! proxy's header), while valid users behind one address are not.

use crate::common::metrics;
use crate::common::mls::{self, SUITE_NAME};
use crate::common::{SERVICE_DID, TestApp};
use catbird_generated::lexicons::blue::catbird::mls::{
    get_key_package_status, get_key_packages, publish_key_package,
};
use catbird_generated::runtime::xrpc::http::StatusCode;
use catbird_generated::runtime::xrpc::reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use catbird_generated::runtime::xrpc::reqwest::{RequestBuilder, Url};
use catbird_mls_client::LocalIdentity;
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

fn fetch_request(app: &TestApp, caller: &LocalIdentity, of: &[&LocalIdentity]) -> RequestBuilder {
    let mut query: Vec<(&str, &str)> = of.iter().map(|user| ("dids", user.did.as_str())).collect();
    query.push(("cipherSuite", SUITE_NAME));
    let url = Url::parse_with_params(&app.url(&format!("/xrpc/{FETCH}")), query).unwrap();
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
async fn key_package_fetches_have_a_stricter_budget_counted_in_users(pool: PgPool) {
    let defaults = crate::common::test_config(std::path::Path::new("unused"));
    assert!(defaults.rate_limit_key_package_fetch < defaults.rate_limit_read);
    let app = TestApp::spawn_with(pool, |config| config.rate_limit_key_package_fetch = 5).await;
    let (alice, bob, carol) = (app.user("alice"), app.user("bob"), app.user("carol"));
    for _ in 0..2 {
        let (status, body, _) = send(fetch_request(&app, &alice, &[&bob, &carol])).await;
        // Nothing published: 404 NoKeyPackages, but a fetch all the same.
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    // Four users asked for: two more do not fit the budget of five, one does.
    assert_limited(send(fetch_request(&app, &alice, &[&bob, &carol])).await);
    let (status, body, _) = send(fetch_request(&app, &alice, &[&bob])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_limited(send(fetch_request(&app, &alice, &[&bob])).await);

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
        let body =
            json!({ "keyPackage": mls::key_package(&mls::installation(&user.did, "phone")) });
        app.http()
            .post(app.url(&format!("/xrpc/{PUBLISH}")))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).unwrap())
    };
    for _ in 0..10 {
        let forged = catbird_mls_client::mint_token(
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
async fn an_address_that_keeps_failing_authentication_is_cut_off(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn_with(pool, |config| config.rate_limit_ip_read = 5).await;
    let alice = app.user("alice");
    let before = metrics::scrape(&app).await;
    for _ in 0..5 {
        let (status, body, _) = send(status_request(&app, &alice, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_limited(send(status_request(&app, &alice, None)).await);
    // From this address even a valid token waits now: it is not looked at.
    let token = app.token(&alice, STATUS);
    assert_limited(send(status_request(&app, &alice, Some(token))).await);
    let after = metrics::scrape(&app).await;
    let labels = [("class", "read"), ("scope", "ip")];
    let rejected = after.count("rate_limit_rejections_total", &labels)
        - before.count("rate_limit_rejections_total", &labels);
    assert_eq!(rejected, 2.0);
}

#[sqlx::test(migrations = "./migrations")]
async fn valid_users_behind_one_address_do_not_share_its_budget(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |config| config.rate_limit_ip_read = 2).await;
    for name in ["alice", "bob", "carol"] {
        let user = app.user(name);
        for _ in 0..3 {
            let token = app.token(&user, STATUS);
            let (status, body, _) = send(status_request(&app, &user, Some(token))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn behind_a_proxy_the_address_comes_from_its_header(pool: PgPool) {
    let _exclusive = metrics::exclusive().await;
    let app = TestApp::spawn_with(pool, |config| {
        config.rate_limit_ip_read = 2;
        config.client_ip_header = Some("x-forwarded-for".into());
    })
    .await;
    let alice = app.user("alice");
    // The proxy appends the address it saw; what the client wrote before it
    // is not trusted.
    let from = |address: &str| {
        status_request(&app, &alice, None)
            .header("x-forwarded-for", format!("198.51.100.7, {address}"))
    };
    for _ in 0..2 {
        let (status, body, _) = send(from("203.0.113.1")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_limited(send(from("203.0.113.1")).await);
    let (status, body, _) = send(from("203.0.113.2:5678")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another client: {body}");

    // Without the header (or with no address in it), the connection's
    // address counts: no way around the budget.
    for _ in 0..2 {
        let (status, body, _) = send(status_request(&app, &alice, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_limited(send(from("unknown")).await);
}
