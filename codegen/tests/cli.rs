//! The `codegen` binary end to end: regeneration is deterministic and
//! idempotent, and `--check` tells fresh from stale output.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/lexicon")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("codegen-cli-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn codegen(out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_codegen"))
        .arg("--lexicons")
        .arg(fixtures())
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("codegen runs")
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, &mut files);
    files
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn regenerating_twice_leaves_the_tree_byte_identical() {
    let out = scratch("twice");
    let first = codegen(&out, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = snapshot(&out);
    assert!(
        before.len() >= 4,
        "the fixtures generate a file per namespace level"
    );

    let second = codegen(&out, &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(" 0 written, 0 removed"),
        "{}",
        stderr(&second)
    );
    assert_eq!(before, snapshot(&out));

    // A second, independent output directory gets the very same bytes.
    let other = scratch("twice-other");
    assert!(codegen(&other, &[]).status.success());
    let strip = |files: BTreeMap<PathBuf, Vec<u8>>, root: &Path| {
        files
            .into_iter()
            .map(|(p, b)| (p.strip_prefix(root).unwrap().to_path_buf(), b))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(strip(before, &out), strip(snapshot(&other), &other));
    fs::remove_dir_all(&out).unwrap();
    fs::remove_dir_all(&other).unwrap();
}

#[test]
fn check_passes_when_fresh_and_lists_stale_files() {
    let out = scratch("check");
    assert!(codegen(&out, &[]).status.success());
    let fresh = codegen(&out, &["--check"]);
    assert_eq!(fresh.status.code(), Some(0), "{}", stderr(&fresh));

    let lexicons = out.join("src/lexicons");
    let changed = lexicons.join("com/example/fixture.rs");
    let mut text = fs::read_to_string(&changed).unwrap();
    text.push_str("// hand edit\n");
    fs::write(&changed, text).unwrap();
    let missing = lexicons.join("com/example.rs");
    fs::remove_file(&missing).unwrap();
    let extra = lexicons.join("com/stray.rs");
    fs::write(&extra, "").unwrap();

    let stale = codegen(&out, &["--check"]);
    let report = stderr(&stale);
    assert_eq!(stale.status.code(), Some(1), "{report}");
    assert!(report.contains("run `cargo run --bin codegen`"), "{report}");
    for (label, path) in [
        ("changed", &changed),
        ("missing", &missing),
        ("extra", &extra),
    ] {
        assert!(
            report.contains(&format!("{label}: {}", path.display())),
            "{report}"
        );
    }
    // --check never writes.
    assert!(!missing.exists() && extra.exists());

    // Regenerating repairs all three.
    assert!(codegen(&out, &[]).status.success());
    assert!(missing.exists() && !extra.exists());
    assert_eq!(codegen(&out, &["--check"]).status.code(), Some(0));
    fs::remove_dir_all(&out).unwrap();
}

#[test]
fn an_edited_lexicon_changes_the_recorded_digest() {
    let lexicons = scratch("digest-lexicons");
    copy_dir(&fixtures(), &lexicons);
    let out = scratch("digest-out");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_codegen"))
            .arg("--lexicons")
            .arg(&lexicons)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&[]).status.success());
    let root = out.join("src/lexicons/mod.rs");
    let digest = codegen::digest::lexicon_digest(&lexicons).unwrap();
    let recorded = fs::read_to_string(&root).unwrap();
    assert_eq!(
        codegen::digest::recorded_digest(&recorded),
        Some(digest.as_str())
    );

    let post = lexicons.join("com/example/fixture/post.json");
    let edited =
        fs::read_to_string(&post)
            .unwrap()
            .replacen("\"description\"", "\"description\" ", 1);
    fs::write(&post, edited).unwrap();
    let stale = run(&["--check"]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(stderr(&stale).contains("changed: "), "{}", stderr(&stale));
    fs::remove_dir_all(&lexicons).unwrap();
    fs::remove_dir_all(&out).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}
