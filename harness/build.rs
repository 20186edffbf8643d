//! Generates one `#[test]` per scenario file in `../scenarios`, so
//! `cargo test` runs every simulator scenario through the same runner as
//! `cvk-hil run`, and a failure names its file.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // The manifest dir of this build, read at run time: a build script
    // binary reused from another checkout (a shared or copied target dir)
    // must not list that checkout's scenarios.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("../scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"));
    files.sort();
    let mut out = String::new();
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario");
        let ident: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "#[test]\nfn scenario_{ident}() {{ run_scenario_file({:?}); }}\n",
            path.canonicalize()
                .unwrap_or(path.clone())
                .display()
                .to_string()
        );
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("scenario_tests.rs");
    std::fs::write(dest, out).expect("writing scenario_tests.rs");
}
