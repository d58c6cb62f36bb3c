//! Each directory under `tests/invalid/` holds lexicons with known problems
//! and an `EXPECT` file of (file, JSON pointer) pairs. The generator must
//! exit non-zero, report every listed problem at its file and pointer, and
//! never panic.

use std::path::Path;
use std::process::Command;

fn run_case(case: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/invalid")
        .join(case);
    let out = std::env::temp_dir().join(format!("codegen-invalid-{case}-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_codegen"))
        .arg("--lexicons")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("codegen runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{case}: expected exit 2, stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{case}: the generator panicked:\n{stderr}"
    );
    assert!(
        !out.exists(),
        "{case}: nothing may be written for invalid input"
    );

    let expect = std::fs::read_to_string(dir.join("EXPECT")).expect("EXPECT file");
    let lines: Vec<&str> = expect.lines().collect();
    assert!(
        lines.len() >= 2 && lines.len().is_multiple_of(2),
        "{case}: EXPECT holds (file, pointer) pairs"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    for pair in lines.chunks(2) {
        let (file, pointer) = (pair[0], pair[1]);
        let location = format!("{}#{pointer}:", dir.join(file).display());
        assert!(
            errors.iter().any(|e| e.contains(&location)),
            "{case}: no error at {location}; stderr:\n{stderr}"
        );
    }
    assert_eq!(
        errors.len(),
        lines.len() / 2,
        "{case}: exactly the expected problems; stderr:\n{stderr}"
    );
}

macro_rules! cases {
    ($($name:ident => $dir:literal,)*) => {
        $(
            #[test]
            fn $name() {
                run_case($dir);
            }
        )*
    };
}

cases! {
    invalid_json => "invalid-json",
    unknown_type => "unknown-type",
    id_path_mismatch => "id-path-mismatch",
    dangling_ref => "dangling-ref",
    ref_to_token => "ref-to-token",
    closed_empty_union => "closed-empty-union",
    default_violates_schema => "default-violates-schema",
    const_violates_schema => "const-violates-schema",
    enum_default_not_in_enum => "enum-default-not-in-enum",
    params_bad_type => "params-bad-type",
    several_problems_are_all_reported => "several-problems",
}
