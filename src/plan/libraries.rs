//! The library versions that make an output's pixels, as recorded with it.
//!
//! | library | outputs it makes | version from |
//! |---|---|---|
//! | OpenSlide | WSI tiles, QC pictures | the libopenslide this process runs with (`openslide_get_version`): a system library, so an `apt upgrade` changes it without a new cpia |
//! | openslide-rs | WSI | `Cargo.lock` |
//! | libjpeg-turbo | all (JPEG decoding, the direct reader, every JPEG written) | the `jconfig.h` turbojpeg-sys built |
//! | turbojpeg, turbojpeg-sys | all | `Cargo.lock` |
//! | fast_image_resize | all (resizing) | `Cargo.lock` |
//! | image, png | all (PNG decoding; the QC picture's PNG) | `Cargo.lock` |
//! | tiff, zune-jpeg | ROI (TIFF decoding; CMYK JPEGs) | `Cargo.lock` |
//!
//! **Recorded, not keyed** (the decision, and why): every output's record
//! names these versions (`provenance.libraries`; `cpia why` shows them,
//! `cpia status` counts outputs made with versions other than the ones this
//! cpia runs with), but they are not in any key ([`super::key`]), so a
//! library update rebuilds nothing by itself:
//! - the bundled libraries (crates, the libjpeg-turbo turbojpeg-sys builds)
//!   change only with a new cpia, and the golden tests (`tests/golden.rs`)
//!   fail when one changes an operator's bytes, asking for that operator's
//!   version — which *is* in the keys — to be bumped; the JPEG encoder's
//!   version is in the keys already ([`crate::ops::ENCODER`]);
//! - the system libopenslide changes under a built dataset (`apt upgrade`);
//!   putting it in the keys would rebuild ~148 M tiles for a release that
//!   changes no pixel. Instead the direct reader, whose pixels are those of
//!   OpenSlide 3.4.1, is used only beside that version
//!   ([`crate::slide::DIRECT_READER_OPENSLIDE`]; otherwise every region is
//!   read through OpenSlide and the reader recorded is `openslide`), and
//!   `cpia status` says how many outputs another OpenSlide made, so a
//!   rebuild is a decision, not an accident.

use std::sync::OnceLock;

use crate::ops::libraries::{crate_version, LIBJPEG_TURBO};
use crate::recipe::Kind;

/// The versions that make the pixels of a collection of `kind`, as recorded
/// (`name version` pairs, `, `-separated, in a fixed order).
pub fn of_kind(kind: Kind) -> &'static str {
    static WSI: OnceLock<String> = OnceLock::new();
    static ROI: OnceLock<String> = OnceLock::new();
    match kind {
        Kind::Wsi => WSI.get_or_init(|| describe(Kind::Wsi)),
        Kind::Roi => ROI.get_or_init(|| describe(Kind::Roi)),
    }
}

fn describe(kind: Kind) -> String {
    let mut parts: Vec<(&str, String)> = Vec::new();
    if kind == Kind::Wsi {
        parts.push(("openslide", crate::slide::openslide_version().to_string()));
        parts.push(("openslide-rs", crate_version("openslide-rs").to_string()));
    }
    parts.push(("libjpeg-turbo", LIBJPEG_TURBO.to_string()));
    let mut crates = vec![
        "turbojpeg",
        "turbojpeg-sys",
        "fast_image_resize",
        "image",
        "png",
    ];
    if kind == Kind::Roi {
        crates.extend(["tiff", "zune-jpeg"]);
    }
    for k in crates {
        parts.push((k, crate_version(k).to_string()));
    }
    parts
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What differs between a recorded set and the current one, library by
/// library: `openslide 3.4.0 → 3.4.1`; a library only one side names shows
/// `?` on the other. Empty when they are the same.
pub fn differences(recorded: &str, now: &str) -> Vec<String> {
    let split = |s: &str| -> Vec<(String, String)> {
        s.split(", ")
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once(' ') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect()
    };
    let (old, new) = (split(recorded), split(now));
    let version = |list: &[(String, String)], name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map_or("?".to_string(), |(_, v)| v.clone())
    };
    let mut names: Vec<&String> = new.iter().map(|(n, _)| n).collect();
    names.extend(
        old.iter()
            .map(|(n, _)| n)
            .filter(|n| !new.iter().any(|(m, _)| m == *n)),
    );
    names
        .into_iter()
        .filter_map(|n| {
            let (a, b) = (version(&old, n), version(&new, n));
            (a != b).then(|| format!("{n} {a} → {b}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sets_name_the_libraries_of_each_kind() {
        let wsi = of_kind(Kind::Wsi);
        let roi = of_kind(Kind::Roi);
        assert!(wsi.starts_with("openslide "), "{wsi}");
        assert!(!roi.contains("openslide"), "{roi}");
        for lib in ["libjpeg-turbo ", "fast_image_resize ", "image ", "png "] {
            assert!(
                wsi.contains(lib) && roi.contains(lib),
                "{lib}: {wsi} / {roi}"
            );
        }
        assert!(roi.contains("zune-jpeg ") && roi.contains("tiff "), "{roi}");
        assert!(!wsi.contains("unknown"), "{wsi}");
    }

    #[test]
    fn differences_name_each_library_that_moved() {
        let now = "openslide 3.4.1, libjpeg-turbo 3.1.0, png 0.18.1";
        assert!(differences(now, now).is_empty());
        assert_eq!(
            differences("openslide 3.4.0, libjpeg-turbo 3.1.0, png 0.18.1", now),
            ["openslide 3.4.0 → 3.4.1"]
        );
        assert_eq!(
            differences("", "png 0.18.1"),
            ["png ? → 0.18.1"],
            "an unknown (older) record"
        );
        assert_eq!(differences("tiff 0.11.3", ""), ["tiff 0.11.3 → ?"]);
    }
}
