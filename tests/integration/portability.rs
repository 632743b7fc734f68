//! The library is for desktop apps too: built without its default features it must use no
//! Unix-only API, so that it builds on Windows and macOS. Handlers as processes (`exec`)
//! are Unix-only and sit behind the `cli` feature and `cfg(unix)`; anything else that needs
//! Unix is gated where it is used. (`.ci/run` also checks the library for Windows when the
//! target can be installed; this test runs everywhere.)

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_library_without_default_features_uses_no_unix_only_api_ungated() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(
        lib.contains("#[cfg(all(feature = \"cli\", unix))]\npub mod exec;"),
        "exec must be behind the cli feature and cfg(unix)"
    );
    let unix_only = ["std::os::unix", "libc::", "nix::"];
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut ungated = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        // Compiled only with the `cli` feature (exec also only on Unix).
        if rel.starts_with("exec/") || rel.starts_with("cli/") || rel.starts_with("bin/") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("//") || !unix_only.iter().any(|u| line.contains(u)) {
                continue;
            }
            // Gated: a `#[cfg(unix)]` on the item (or block) within the lines above it.
            let gated = lines[n.saturating_sub(12)..n]
                .iter()
                .any(|l| l.trim() == "#[cfg(unix)]");
            if !gated {
                ungated.push(format!("src/{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        ungated.is_empty(),
        "Unix-only API outside cfg(unix):\n{}",
        ungated.join("\n")
    );
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let libc = manifest.find("\nlibc = ").expect("libc is a dependency");
    let unix_section = manifest.find("[target.'cfg(unix)'.dependencies]").unwrap();
    assert!(
        unix_section < libc && !manifest[unix_section..libc].contains("\n["),
        "libc must be a Unix-only dependency"
    );
}
