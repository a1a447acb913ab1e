//! The synthetic source trees of tests/catalog_trees.txt: trees shaped like
//! the real downloads of the catalog's ROI collections, planted in a
//! workspace with images cut from the real test images, and where each file
//! must land (tests/catalog.rs, tests/catalog_reference.rs).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Ws;

/// One collection's synthetic source tree.
pub struct Tree {
    pub collection: String,
    /// Source root name; the tree goes in `sources/<root>/`.
    pub root: String,
    /// (path under the root, where it must land; None = not an input).
    pub files: Vec<(String, Option<Expect>)>,
}

/// Where an input lands.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expect {
    /// `<scale>/<sub-dataset>/<name>.jpg`
    pub output: String,
    pub class: Option<String>,
}

pub fn trees() -> Vec<Tree> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/catalog_trees.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out: Vec<Tree> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", path.display(), n + 1);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_prefix("== ") {
            let (collection, root) = head
                .rsplit_once(" @ ")
                .unwrap_or_else(|| panic!("{}", at()));
            out.push(Tree {
                collection: collection.to_string(),
                root: root.to_string(),
                files: vec![],
            });
            continue;
        }
        let (file, to) = line
            .split_once(" => ")
            .unwrap_or_else(|| panic!("{}", at()));
        let expect =
            (to != "-").then(
                || match to.strip_suffix(']').and_then(|t| t.rsplit_once(" [")) {
                    Some((output, class)) => Expect {
                        output: format!("{output}.jpg"),
                        class: Some(class.to_string()),
                    },
                    None => Expect {
                        output: format!("{to}.jpg"),
                        class: None,
                    },
                },
            );
        let tree = out
            .last_mut()
            .unwrap_or_else(|| panic!("{}: file before `==`", at()));
        tree.files.push((file.to_string(), expect));
    }
    out
}

/// Small crops of the real ROI test images, re-encoded in the format a file's
/// suffix names.
pub struct Images(Vec<image::RgbImage>);

impl Images {
    pub fn load(td: &Path) -> Images {
        let mut names: Vec<PathBuf> = std::fs::read_dir(td.join("roi"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let thumbs = names
            .iter()
            .map(|p| {
                let img = image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                img.thumbnail(160, 160).to_rgb8()
            })
            .collect();
        Images(thumbs)
    }

    /// Image number `i`: a crop of a real image, 64–96 px wide, 48–72 px high.
    pub fn bytes(&self, i: usize, suffix: &str) -> Vec<u8> {
        let src = &self.0[i % self.0.len()];
        let (w, h) = (64 + 16 * (i as u32 % 3), 48 + 12 * (i as u32 % 3));
        let (w, h) = (w.min(src.width()), h.min(src.height()));
        let crop =
            image::imageops::crop_imm(src, (src.width() - w) / 2, (src.height() - h) / 2, w, h)
                .to_image();
        let format = match suffix.to_ascii_lowercase().as_str() {
            "png" => image::ImageFormat::Png,
            "jpg" | "jpeg" => image::ImageFormat::Jpeg,
            "tif" | "tiff" => image::ImageFormat::Tiff,
            "bmp" => image::ImageFormat::Bmp,
            other => panic!("no encoder for .{other}"),
        };
        let mut out = std::io::Cursor::new(Vec::new());
        crop.write_to(&mut out, format).unwrap();
        out.into_inner()
    }
}

/// The start of an AppleDouble file (`._x.png`: macOS metadata, not an image).
pub const APPLE_DOUBLE: &[u8] = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ";

pub fn is_image(path: &str) -> Option<&str> {
    let ext = path.rsplit_once('.')?.1;
    ["png", "jpg", "jpeg", "tif", "tiff", "bmp"]
        .contains(&ext.to_ascii_lowercase().as_str())
        .then_some(ext)
}

/// Where each planted input must land: output → (collection, path under
/// its root, class).
pub type Planted = BTreeMap<String, (String, String, Option<String>)>;

/// Writes `trees` into `ws` under `sources/<root>/`: image files cut from
/// `images` in the format their suffix names, other files a line of text, a
/// README.txt at every root and, beside each tree's first input, a
/// `.DS_Store` and the AppleDouble file macOS writes on foreign disks
/// (`._<name>`, same suffix). Returns where each input must land.
pub fn plant(ws: &Ws, trees: &[&Tree], images: &Images) -> Planted {
    let mut expected = Planted::new();
    let files = trees
        .iter()
        .flat_map(|t| t.files.iter().map(move |f| (*t, f)));
    for (i, (t, (file, expect))) in files.enumerate() {
        let rel = format!("sources/{}/{file}", t.root);
        match is_image(file) {
            Some(ext) => ws.write_bytes(&rel, &images.bytes(i, ext)),
            None => ws.write(&rel, "not an image\n"),
        }
        if let Some(e) = expect {
            let prev = expected.insert(
                e.output.clone(),
                (t.collection.clone(), file.clone(), e.class.clone()),
            );
            assert!(prev.is_none(), "{} expected twice", e.output);
        }
    }
    for t in trees {
        ws.write(
            &format!("sources/{}/README.txt", t.root),
            "About this collection.\n",
        );
        let first = &t.files.iter().find(|(_, e)| e.is_some()).unwrap().0;
        let (dir, name) = first.rsplit_once('/').unwrap_or(("", first));
        ws.write_bytes(
            &format!("sources/{}/{dir}/.DS_Store", t.root),
            b"\0\0\0\x01Bud1",
        );
        ws.write_bytes(&format!("sources/{}/{dir}/._{name}", t.root), APPLE_DOUBLE);
    }
    expected
}
