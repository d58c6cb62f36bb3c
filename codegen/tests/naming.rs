//! NSID prefixes whose Rust modules collide generate, numbered and noted
//! (the README's "Names" section); the other collisions are in the fixture crate's
//! `collide.json`.

#[test]
fn colliding_module_names_are_numbered() {
    let dir = std::env::temp_dir().join(format!("codegen-naming-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, id) in [
        ("com/example/foo-bar/x.json", "com.example.foo-bar.x"),
        ("com/example/fooBar.json", "com.example.fooBar"),
    ] {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let doc = format!(r#"{{"lexicon":1,"id":"{id}","defs":{{"main":{{"type":"token"}}}}}}"#);
        std::fs::write(file, doc).unwrap();
    }
    let generated = codegen::generate(&dir).expect("generates");
    std::fs::remove_dir_all(&dir).unwrap();
    let example = &generated.files[std::path::Path::new("src/lexicons/com/example.rs")];
    assert!(example.contains("pub mod foo_bar;"), "{example}");
    assert!(example.contains("pub mod foo_bar_2 {"), "{example}");
    let notes: Vec<String> = generated.notes.iter().map(|n| n.to_string()).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("NSID prefix com.example.fooBar is the Rust module foo_bar_2"),
        "{notes:?}"
    );
}
