//! The AT Protocol interop crypto vectors (vendored under `interop/crypto`,
//! see interop/SOURCE.md) against the service-auth keys: did:key encodings
//! of known private keys, and signatures (ES256K and ES256, Multikey and
//! legacy DID document forms; high-S signatures must be refused). Prints one
//! `interop <file>: total N, agreed M` line per file, for `scripts/interop`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use catbird_mls_core::auth::keys::{Algorithm, PrivateKey, PublicKey};
use serde_json::Value;

fn vectors(file: &str) -> Vec<Value> {
    let path = format!("{}/../interop/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn report(file: &str, total: usize, agreed: usize) {
    println!("interop {file}: total {total}, agreed {agreed}");
    assert_eq!(agreed, total, "{file}: {} disagreements", total - agreed);
}

fn text<'a>(vector: &'a Value, field: &str) -> &'a str {
    vector[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {vector}"))
}

#[test]
fn did_keys_of_known_private_keys() {
    for (file, algorithm) in [
        ("crypto/w3c_didkey_K256.json", Algorithm::Es256k),
        ("crypto/w3c_didkey_P256.json", Algorithm::Es256),
    ] {
        let vectors = vectors(file);
        let agreed = vectors
            .iter()
            .filter(|vector| {
                // The K-256 file gives the key in hex, the P-256 one in base58.
                let bytes = match vector.get("privateKeyBytesHex").and_then(Value::as_str) {
                    Some(hex) => catbird_mls_core::mls_crypto::from_hex(hex).unwrap(),
                    None => bs58::decode(text(vector, "privateKeyBytesBase58"))
                        .into_vec()
                        .unwrap(),
                };
                let public = PrivateKey::from_bytes(algorithm, &bytes)
                    .unwrap()
                    .public_key();
                let expected = text(vector, "publicDidKey");
                format!("did:key:{}", public.to_multikey()) == expected
                    && PublicKey::from_did_key(expected).ok() == Some(public)
            })
            .count();
        report(file, vectors.len(), agreed);
    }
}

#[test]
fn signatures_verify_exactly_when_the_vectors_say() {
    let file = "crypto/signature-fixtures.json";
    let vectors = vectors(file);
    let agreed = vectors
        .iter()
        .filter(|vector| {
            let message = STANDARD_NO_PAD
                .decode(text(vector, "messageBase64"))
                .unwrap();
            let signature = STANDARD_NO_PAD
                .decode(text(vector, "signatureBase64"))
                .unwrap();
            let expected = vector["validSignature"].as_bool().unwrap();
            // The same key in both forms a DID document may carry it.
            let from_did_key = PublicKey::from_did_key(text(vector, "publicKeyDid")).unwrap();
            let legacy = PublicKey::from_legacy(
                text(vector, "didDocSuite"),
                text(vector, "publicKeyMultibase"),
            )
            .unwrap();
            let algorithm_matches =
                from_did_key.algorithm().jwt_name() == text(vector, "algorithm");
            let verdicts =
                [&from_did_key, &legacy].map(|key| key.verify(&message, &signature).is_ok());
            algorithm_matches && legacy == from_did_key && verdicts == [expected, expected]
        })
        .count();
    report(file, vectors.len(), agreed);
}
