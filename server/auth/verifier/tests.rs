//! The verifier end to end: real keys, real DID documents on disk, real
//! signatures; one test per way a token can be wrong.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use catbird_generated::lexicons::blue::catbird::mls::{get_convos, send_message};
use catbird_generated::runtime::Did;

use super::*;
use catbird_mls_client::identity::{LocalIdentity, create_identity, mint_token};
use catbird_mls_core::auth::did::file_name;
use catbird_mls_core::auth::jwt::{Claims, Header, sign, sign_with_header};
use catbird_mls_core::auth::keys::{Algorithm, PrivateKey};
use tempfile::TempDir;

use crate::auth::replay::MemoryReplayStore;
use crate::auth::resolver::DirectoryResolver;

const NSID: &str = get_convos::NSID;
const SERVICE: &str = "did:web:mls.catbird.test";

struct Fixture {
    _dir: TempDir,
    verifier: Verifier<DirectoryResolver, MemoryReplayStore>,
    alice: LocalIdentity,
    bob: LocalIdentity,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let alice = create_identity(dir.path(), "alice", Algorithm::Es256k).unwrap();
    let bob = create_identity(dir.path(), "bob", Algorithm::Es256).unwrap();
    let verifier = Verifier::new(
        Did::new(SERVICE).unwrap(),
        DirectoryResolver::new(dir.path()),
        MemoryReplayStore::new(),
    );
    Fixture {
        _dir: dir,
        verifier,
        alice,
        bob,
    }
}

fn service() -> Did {
    Did::new(SERVICE).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Claims as `identity` would normally send them.
fn claims(identity: &LocalIdentity) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: identity.did.to_string(),
        aud: SERVICE.into(),
        exp: now + 60,
        iat: Some(now),
        nbf: None,
        lxm: Some(NSID.into()),
        jti: Some(format!("jti-{now}-{}", rand_suffix())),
    }
}

fn rand_suffix() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}

impl Fixture {
    async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        self.verifier.verify(NSID, Some(&bearer(token))).await
    }

    async fn verify_claims(&self, claims: &Claims) -> Result<Caller, AuthError> {
        self.verify(&sign(claims, &self.alice.key)).await
    }
}

#[tokio::test]
async fn accepts_es256k_and_es256_tokens() {
    let f = fixture();
    for identity in [&f.alice, &f.bob] {
        let token = mint_token(identity, &service(), NSID, Duration::from_secs(60));
        let caller = f.verify(&token).await.unwrap();
        assert_eq!(
            caller,
            Caller {
                did: identity.did.clone(),
                issuer: identity.did.to_string(),
                client_ip: None,
            }
        );
    }
    assert_eq!(f.alice.key.algorithm(), Algorithm::Es256k);
    assert_eq!(f.bob.key.algorithm(), Algorithm::Es256);
}

/// DID documents in the legacy form the reference PLC directory publishes
/// (`EcdsaSecp256k1VerificationKey2019` / `...r1...`, a bare SEC1 point,
/// uncompressed or compressed): tokens verify as with a Multikey, and a
/// token signed by another key still does not.
#[tokio::test]
async fn accepts_tokens_of_legacy_verification_methods() {
    let f = fixture();
    let path = |did: &Did| f._dir.path().join(file_name(did));
    for (identity, kind) in [
        (&f.alice, "EcdsaSecp256k1VerificationKey2019"),
        (&f.bob, "EcdsaSecp256r1VerificationKey2019"),
    ] {
        for compressed in [false, true] {
            let mut document: crate::auth::DidDocument =
                serde_json::from_slice(&std::fs::read(path(&identity.did)).unwrap()).unwrap();
            let point = match identity.key.public_key() {
                catbird_mls_core::auth::PublicKey::K256(key) => {
                    key.to_encoded_point(compressed).as_bytes().to_vec()
                }
                catbird_mls_core::auth::PublicKey::P256(key) => {
                    key.to_encoded_point(compressed).as_bytes().to_vec()
                }
            };
            let method = &mut document.verification_method[0];
            method.kind = kind.to_owned();
            method.public_key_multibase = Some(format!("z{}", bs58::encode(point).into_string()));
            std::fs::write(path(&identity.did), serde_json::to_vec(&document).unwrap()).unwrap();

            let token = mint_token(identity, &service(), NSID, Duration::from_secs(60));
            assert_eq!(f.verify(&token).await.unwrap().did, identity.did, "{kind}");
            let impostor = LocalIdentity {
                key: PrivateKey::generate(identity.key.algorithm()).unwrap(),
                ..identity.clone()
            };
            let forged = mint_token(&impostor, &service(), NSID, Duration::from_secs(60));
            assert_eq!(
                f.verify(&forged).await,
                Err(AuthError::BadSignature),
                "{kind}"
            );
        }
    }
}

#[tokio::test]
async fn a_labeler_iss_is_checked_with_its_label_key() {
    let f = fixture();
    // alice's document gains a labeler key, `#atproto_label`.
    let label_key = PrivateKey::generate(Algorithm::Es256k).unwrap();
    let path = f._dir.path().join(file_name(&f.alice.did));
    let mut document: DidDocument = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    document
        .verification_method
        .push(catbird_mls_core::auth::VerificationMethod {
            id: format!("{}#atproto_label", f.alice.did),
            kind: "Multikey".into(),
            controller: f.alice.did.to_string(),
            public_key_multibase: Some(label_key.public_key().to_multikey()),
        });
    std::fs::write(&path, serde_json::to_vec(&document).unwrap()).unwrap();

    let mut claims = claims(&f.alice);
    claims.iss = format!("{}#atproto_labeler", f.alice.did);
    let caller = f.verify(&sign(&claims, &label_key)).await.unwrap();
    assert_eq!(caller.did, f.alice.did);
    assert_eq!(caller.issuer, claims.iss);
    // The account's own key does not sign for its labeler.
    claims.jti = Some("another".into());
    assert_eq!(f.verify_claims(&claims).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn refuses_an_iss_with_any_other_fragment() {
    let f = fixture();
    for fragment in [
        "atproto",
        "../../x",
        "",
        "atproto_labeler/x",
        "ATPROTO_LABELER",
    ] {
        let mut claims = claims(&f.alice);
        claims.iss = format!("{}#{fragment}", f.alice.did);
        assert!(
            matches!(f.verify_claims(&claims).await, Err(AuthError::Malformed(m)) if m.contains("service id")),
            "{fragment:?}"
        );
    }
}

#[tokio::test]
async fn accepts_a_case_insensitive_scheme() {
    let f = fixture();
    // The scheme is case-insensitive.
    let token = sign(&self::claims(&f.alice), &f.alice.key);
    assert!(
        f.verifier
            .verify(NSID, Some(&format!("bearer {token}")))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn rejects_a_missing_header() {
    let f = fixture();
    assert_eq!(f.verifier.verify(NSID, None).await, Err(AuthError::Missing));
}

#[tokio::test]
async fn rejects_malformed_tokens() {
    let f = fixture();
    let good = sign(&claims(&f.alice), &f.alice.key);
    let mut bad_iss = claims(&f.alice);
    bad_iss.iss = "alice".into();
    let mut empty_fragment = claims(&f.alice);
    empty_fragment.iss = format!("{}#", f.alice.did);
    let mut no_jti = claims(&f.alice);
    no_jti.jti = None;
    // The jti is stored as text, which cannot hold U+0000.
    let mut nul_jti = claims(&f.alice);
    nul_jti.jti = Some("a\0b".into());
    for header in [
        String::new(),
        "Bearer".into(),
        format!("Basic {good}"),
        format!("Token {good}"),
        bearer(""),
        bearer("not-a-jwt"),
        bearer(&good.replacen('.', "", 1)),
        bearer(&format!("{good}.extra")),
        bearer(&sign(&bad_iss, &f.alice.key)),
        bearer(&sign(&empty_fragment, &f.alice.key)),
        bearer(&sign(&no_jti, &f.alice.key)),
        bearer(&sign(&nul_jti, &f.alice.key)),
    ] {
        let result = f.verifier.verify(NSID, Some(&header)).await;
        assert!(
            matches!(result, Err(AuthError::Malformed(_))),
            "{header:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn rejects_bad_signatures() {
    let f = fixture();
    // A payload changed after signing.
    let token = sign(&claims(&f.alice), &f.alice.key);
    let [header, _, signature]: [&str; 3] =
        token.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut forged_claims = claims(&f.alice);
    forged_claims.lxm = Some(NSID.into());
    forged_claims.exp += 3600;
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
    assert_eq!(
        f.verify(&format!("{header}.{forged_payload}.{signature}"))
            .await,
        Err(AuthError::BadSignature)
    );

    // Alice's claims signed by another secp256k1 key.
    let other = PrivateKey::generate(Algorithm::Es256k).unwrap();
    assert_eq!(
        f.verify(&sign(&claims(&f.alice), &other)).await,
        Err(AuthError::BadSignature)
    );

    // A truncated signature.
    let token = sign(&claims(&f.alice), &f.alice.key);
    assert_eq!(
        f.verify(&token[..token.len() - 2]).await,
        Err(AuthError::BadSignature)
    );

    // Alice's claims signed by a P-256 key: the algorithm does not match her key.
    let other = PrivateKey::generate(Algorithm::Es256).unwrap();
    assert_eq!(
        f.verify(&sign(&claims(&f.alice), &other)).await,
        Err(AuthError::UnsupportedAlgorithm)
    );
}

#[tokio::test]
async fn rejects_the_wrong_audience() {
    let f = fixture();
    let mut claims = claims(&f.alice);
    claims.aud = "did:web:other.test".into();
    assert_eq!(
        f.verify_claims(&claims).await,
        Err(AuthError::WrongAudience)
    );
}

#[tokio::test]
async fn rejects_expired_tokens() {
    let f = fixture();
    let mut claims = claims(&f.alice);
    claims.iat = Some(claims.exp - 600);
    claims.exp -= 200; // 140 s ago: past the 60 s skew allowance
    assert_eq!(f.verify_claims(&claims).await, Err(AuthError::Expired));
}

/// Found by the `token` fuzz target: the replay store's expiry (`exp` plus
/// the skew) overflowed, and the verifier panicked.
#[tokio::test]
async fn accepts_an_exp_at_the_end_of_representable_time_once() {
    let f = fixture();
    let mut claims = claims(&f.alice);
    claims.exp = DateTime::<Utc>::MAX_UTC.timestamp();
    let token = sign(&claims, &f.alice.key);
    assert!(f.verify(&token).await.is_ok());
    assert_eq!(f.verify(&token).await, Err(AuthError::Replayed));
}

#[tokio::test]
async fn tolerates_clock_skew_but_not_more() {
    let f = fixture();
    let now = chrono::Utc::now().timestamp();
    let mut claims = claims(&f.alice);
    claims.exp = now - 30;
    claims.iat = Some(now + 30);
    assert!(f.verify_claims(&claims).await.is_ok());
}

#[tokio::test]
async fn rejects_tokens_issued_in_the_future() {
    let f = fixture();
    let mut claims = claims(&f.alice);
    claims.iat = Some(claims.iat.unwrap() + 300);
    claims.exp += 300;
    assert_eq!(
        f.verify_claims(&claims).await,
        Err(AuthError::IssuedInFuture)
    );

    let mut claims = self::claims(&f.alice);
    claims.nbf = Some(claims.exp + 300);
    claims.exp += 600;
    assert_eq!(f.verify_claims(&claims).await, Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn rejects_tokens_for_another_method() {
    let f = fixture();
    let token = mint_token(
        &f.alice,
        &service(),
        send_message::NSID,
        Duration::from_secs(60),
    );
    assert_eq!(
        f.verify(&token).await,
        Err(AuthError::WrongMethod {
            expected: NSID.into(),
            got: Some(send_message::NSID.into())
        })
    );
    let mut claims = claims(&f.alice);
    claims.lxm = None;
    assert_eq!(
        f.verify_claims(&claims).await,
        Err(AuthError::WrongMethod {
            expected: NSID.into(),
            got: None
        })
    );
}

#[tokio::test]
async fn rejects_a_replayed_token() {
    let f = fixture();
    let token = mint_token(&f.alice, &service(), NSID, Duration::from_secs(60));
    assert!(f.verify(&token).await.is_ok());
    assert_eq!(f.verify(&token).await, Err(AuthError::Replayed));
    // The same jti from someone else is theirs, not a replay.
    let mut theirs = claims(&f.bob);
    theirs.jti = crate::auth::jwt::parse(&token).unwrap().claims.jti;
    assert!(f.verify(&sign(&theirs, &f.bob.key)).await.is_ok());
}

#[tokio::test]
async fn a_forged_token_does_not_use_up_a_jti() {
    let f = fixture();
    let claims = claims(&f.alice);
    let other = PrivateKey::generate(Algorithm::Es256k).unwrap();
    assert_eq!(
        f.verify(&sign(&claims, &other)).await,
        Err(AuthError::BadSignature)
    );
    assert!(f.verify_claims(&claims).await.is_ok());
}

#[tokio::test]
async fn rejects_access_refresh_and_dpop_tokens() {
    let f = fixture();
    for typ in ["at+jwt", "refresh+jwt", "dpop+jwt", "application/at+jwt"] {
        let header = Header {
            alg: "ES256K".into(),
            typ: Some(typ.into()),
        };
        let token = sign_with_header(&header, &claims(&f.alice), &f.alice.key);
        assert_eq!(
            f.verify(&token).await,
            Err(AuthError::ForbiddenTokenType(typ.into()))
        );
    }
}

#[tokio::test]
async fn rejects_other_algorithms() {
    let f = fixture();
    let claims = claims(&f.alice);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    for alg in ["none", "HS256"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        for signature in ["", "c2lnbmF0dXJl"] {
            let token = format!("{header}.{payload}.{signature}");
            assert_eq!(
                f.verify(&token).await,
                Err(AuthError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
    }
}

#[tokio::test]
async fn rejects_an_unresolvable_did() {
    let f = fixture();
    let stranger = LocalIdentity {
        did: Did::new("did:plc:notinthedirectory").unwrap(),
        handle: None,
        key: PrivateKey::generate(Algorithm::Es256k).unwrap(),
    };
    let token = mint_token(&stranger, &service(), NSID, Duration::from_secs(60));
    assert!(matches!(
        f.verify(&token).await,
        Err(AuthError::UnresolvableDid(_))
    ));
}

/// Serves a stale document from its "cache" and the current one on refresh,
/// like a [`crate::auth::NetworkResolver`] after the issuer rotated its key.
struct RotatedResolver {
    stale: crate::auth::DidDocument,
    current: crate::auth::DidDocument,
}

impl crate::auth::DidResolver for RotatedResolver {
    async fn resolve(&self, _did: &Did) -> Result<crate::auth::DidDocument, AuthError> {
        Ok(self.stale.clone())
    }

    async fn refresh(&self, _did: &Did) -> Result<crate::auth::DidDocument, AuthError> {
        Ok(self.current.clone())
    }
}

#[tokio::test]
async fn picks_up_a_rotated_key() {
    let dir = tempfile::tempdir().unwrap();
    let alice = create_identity(dir.path(), "alice", Algorithm::Es256k).unwrap();
    let read = |did: &Did| {
        let path = dir.path().join(file_name(did));
        serde_json::from_slice::<crate::auth::DidDocument>(&std::fs::read(path).unwrap()).unwrap()
    };
    let stale = read(&alice.did);
    // Rotate to a P-256 key: same DID, new document.
    let rotated_key = PrivateKey::generate(Algorithm::Es256).unwrap();
    let mut current = stale.clone();
    current.verification_method[0].public_key_multibase =
        Some(rotated_key.public_key().to_multikey());
    let verifier = Verifier::new(
        service(),
        RotatedResolver { stale, current },
        MemoryReplayStore::new(),
    );

    let rotated = LocalIdentity {
        key: rotated_key,
        ..alice.clone()
    };
    let token = mint_token(&rotated, &service(), NSID, Duration::from_secs(60));
    assert!(verifier.verify(NSID, Some(&bearer(&token))).await.is_ok());

    let other = LocalIdentity {
        key: PrivateKey::generate(Algorithm::Es256).unwrap(),
        ..alice
    };
    let token = mint_token(&other, &service(), NSID, Duration::from_secs(60));
    assert_eq!(
        verifier.verify(NSID, Some(&bearer(&token))).await,
        Err(AuthError::BadSignature)
    );
}
