//! The AT Protocol interop vectors for the runtime (vendored under
//! `interop/`, see `interop/SOURCE.md`): string-format syntax, and the data
//! model (JSON <-> DAG-CBOR <-> CID). Prints one `interop <file>: total N,
//! agreed M` line per vector file (`scripts/interop` collects them).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use catbird_generated::runtime::{Unknown, check_format};
use serde_json::Value;

fn interop(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../interop")
        .join(file)
}

fn json_vectors(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(interop(file)).expect("vector file");
    serde_json::from_str(&text).expect("a JSON array of vectors")
}

/// Prints the file's line; returns the file's disagreements.
fn report(file: &str, total: usize, disagreements: Vec<String>) -> Vec<String> {
    println!(
        "interop {file}: total {total}, agreed {}",
        total - disagreements.len()
    );
    disagreements
}

#[test]
fn string_format_syntax() {
    let mut files: Vec<_> = std::fs::read_dir(interop("syntax"))
        .expect("syntax dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 24, "{files:?}");
    let mut failed = Vec::new();
    for name in files {
        // `<format>_<syntax|parse>_<valid|invalid>.txt`
        let parts: Vec<&str> = name.trim_end_matches(".txt").split('_').collect();
        let format = match parts[0] {
            "atidentifier" => "at-identifier",
            "aturi" => "at-uri",
            "recordkey" => "record-key",
            other => other,
        };
        let valid = parts[2] == "valid";
        let file = format!("syntax/{name}");
        let text = std::fs::read_to_string(interop(&file)).expect("vector file");
        // Blank lines and `#` comments are not cases; a case is the whole
        // line, spaces included.
        let cases: Vec<&str> = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        let disagreements = cases
            .iter()
            .filter(|case| check_format(format, case).is_ok() != valid)
            .map(|case| format!("{file}: {case:?}: expected valid = {valid}"))
            .collect();
        failed.extend(report(&file, cases.len(), disagreements));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

fn data_model(file: &str, valid: bool) {
    let vectors = json_vectors(file);
    let disagreements = vectors
        .iter()
        .filter_map(|vector| {
            let note = &vector["note"];
            match (
                serde_json::from_value::<Unknown>(vector["json"].clone()),
                valid,
            ) {
                (Ok(value), true) => {
                    // Valid data also goes through DAG-CBOR unchanged.
                    let back = serde_ipld_dagcbor::to_vec(&value)
                        .map_err(|e| e.to_string())
                        .and_then(|cbor| {
                            serde_ipld_dagcbor::from_slice::<Unknown>(&cbor)
                                .map_err(|e| e.to_string())
                        });
                    match back {
                        Ok(back) if back == value => None,
                        Ok(_) => Some(format!("{note}: changed through DAG-CBOR")),
                        Err(e) => Some(format!("{note}: DAG-CBOR failed: {e}")),
                    }
                }
                (Err(_), false) => None,
                (Ok(_), false) => Some(format!("{note}: accepted")),
                (Err(e), true) => Some(format!("{note}: refused: {e}")),
            }
        })
        .collect();
    let disagreements = report(file, vectors.len(), disagreements);
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

#[test]
fn data_model_valid() {
    data_model("data-model/data-model-valid.json", true);
}

#[test]
fn data_model_invalid() {
    data_model("data-model/data-model-invalid.json", false);
}

/// The DAG-CBOR CIDv1 (sha2-256) of `bytes`.
fn cid_of(bytes: &[u8]) -> String {
    catbird_generated::runtime::data::cid_of_dag_cbor(bytes).into_inner()
}

#[test]
fn data_model_fixtures() {
    let file = "data-model/data-model-fixtures.json";
    let vectors = json_vectors(file);
    let mut disagreements = Vec::new();
    for (i, vector) in vectors.iter().enumerate() {
        let encoded = vector["cbor_base64"].as_str().expect("cbor_base64");
        let cbor = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .expect("base64");
        let cid = vector["cid"].as_str().expect("cid");
        let mut problems = Vec::new();
        match serde_json::from_value::<Unknown>(vector["json"].clone()) {
            Ok(from_json) => {
                let encoded = serde_ipld_dagcbor::to_vec(&from_json).expect("encodes");
                if encoded != cbor {
                    problems.push("JSON -> DAG-CBOR differs".to_owned());
                }
                if cid_of(&encoded) != cid {
                    problems.push(format!("CID {} != {cid}", cid_of(&encoded)));
                }
            }
            Err(e) => problems.push(format!("JSON refused: {e}")),
        }
        match serde_ipld_dagcbor::from_slice::<Unknown>(&cbor) {
            Ok(from_cbor) => {
                if serde_json::to_value(&from_cbor).expect("serializes") != vector["json"] {
                    problems.push("DAG-CBOR -> JSON differs".to_owned());
                }
            }
            Err(e) => problems.push(format!("DAG-CBOR refused: {e}")),
        }
        if !problems.is_empty() {
            disagreements.push(format!("#{i}: {}", problems.join("; ")));
        }
    }
    let disagreements = report(file, vectors.len(), disagreements);
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}
