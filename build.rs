//! Compiles the shipped recipes into the binary: every `.toml` under
//! `recipes/` becomes an entry of `$OUT_DIR/catalog_files.rs`, a sorted list of
//! (path relative to `recipes/`, `include_str!` of the file), read by
//! `src/catalog.rs`. Generated from the folder, so a new recipe file cannot be
//! forgotten.
//!
//! Also writes `$OUT_DIR/pixel_libraries.rs` (read by
//! `src/ops/libraries.rs`): the versions of the crates that decode, resize
//! and encode pixels, from `Cargo.lock`, and the version of the
//! libjpeg-turbo that turbojpeg-sys built, from its `jconfig.h`. Read from
//! the files the build uses, so a dependency update cannot leave the
//! recorded versions behind.

use std::path::{Path, PathBuf};

/// The crates whose versions can change output pixels or bytes: decoders,
/// the resizer, the JPEG and PNG codecs, the OpenSlide binding. Lossless
/// decompressors (inflate, LZW) are not listed: they either return the
/// stored bytes or fail.
const PIXEL_CRATES: &[&str] = &[
    "fast_image_resize",
    "image",
    "openslide-rs",
    "png",
    "tiff",
    "turbojpeg",
    "turbojpeg-sys",
    "zune-jpeg",
];

fn main() {
    pixel_libraries();
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.join("recipes");
    // A directory here makes Cargo rerun this script when any file under it changes.
    println!("cargo:rerun-if-changed=recipes");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut entries: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|abs| {
            let rel = abs.strip_prefix(&root).expect("under recipes/");
            let rel: Vec<String> = rel
                .components()
                .map(|c| {
                    c.as_os_str()
                        .to_str()
                        .expect("UTF-8 recipe path")
                        .to_string()
                })
                .collect();
            (rel.join("/"), abs)
        })
        .collect();
    entries.sort();
    let mut out = String::from("&[\n");
    for (rel, abs) in entries {
        let abs = abs.to_str().expect("UTF-8 recipe path");
        out.push_str(&format!("    ({rel:?}, include_str!({abs:?})),\n"));
    }
    out.push_str("]\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("catalog_files.rs");
    std::fs::write(dest, out).expect("writing catalog_files.rs");
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("reading recipes/").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// Writes `pixel_libraries.rs`: `CRATES` ((name, versions) per crate of
/// [`PIXEL_CRATES`]: every version `Cargo.lock` holds, joined by `+`;
/// "unknown" without a lock file) and `LIBJPEG_TURBO`.
fn pixel_libraries() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let lock = manifest.join("Cargo.lock");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let packages: Vec<(String, String)> = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("package")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_string(),
                p.get("version")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let mut out = String::from(
        "/// (crate, its versions in Cargo.lock) of the crates that make pixels.\n\
         pub const CRATES: &[(&str, &str)] = &[\n",
    );
    for krate in PIXEL_CRATES {
        let mut versions: Vec<&str> = packages
            .iter()
            .filter(|(n, _)| n == krate)
            .map(|(_, v)| v.as_str())
            .collect();
        versions.sort_unstable();
        let versions = if versions.is_empty() {
            "unknown".to_string()
        } else {
            versions.join("+")
        };
        out.push_str(&format!("    ({krate:?}, {versions:?}),\n"));
    }
    out.push_str("];\n");
    out.push_str(&format!(
        "/// The libjpeg-turbo turbojpeg-sys built (its `LIBJPEG_TURBO_VERSION`).\n\
         pub const LIBJPEG_TURBO: &str = {:?};\n",
        libjpeg_turbo_version()
    ));
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("pixel_libraries.rs");
    std::fs::write(dest, out).expect("writing pixel_libraries.rs");
}

/// `LIBJPEG_TURBO_VERSION` from the `jconfig.h` in turbojpeg-sys's include
/// paths (`DEP_TURBOJPEG_INCLUDE`, given to direct dependents of a `links`
/// crate), or "unknown".
fn libjpeg_turbo_version() -> String {
    println!("cargo:rerun-if-env-changed=DEP_TURBOJPEG_INCLUDE");
    let includes = std::env::var("DEP_TURBOJPEG_INCLUDE").unwrap_or_default();
    for dir in includes.split(',').filter(|d| !d.is_empty()) {
        let header = Path::new(dir).join("jconfig.h");
        let Ok(text) = std::fs::read_to_string(&header) else {
            continue;
        };
        println!("cargo:rerun-if-changed={}", header.display());
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() == Some("#define") && words.next() == Some("LIBJPEG_TURBO_VERSION") {
                if let Some(v) = words.next() {
                    return v.to_string();
                }
            }
        }
    }
    "unknown".to_string()
}
