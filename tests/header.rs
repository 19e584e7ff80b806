//! The committed header's version macros follow Cargo.toml. (Drift of the
//! rest of the header is checked by regenerating it in scripts/test.sh.)

#[test]
fn header_version_matches_cargo() {
    let h =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/vicpull.h")).unwrap();
    let want = format!("#define VICPULL_VERSION \"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(h.contains(&want), "include/vicpull.h lacks {want}");
    for (part, v) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define VICPULL_VERSION_{part} {v}");
        assert!(h.contains(&line), "include/vicpull.h lacks {line}");
    }
}
