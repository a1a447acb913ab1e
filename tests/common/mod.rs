//! Shared helpers of the integration tests: real workspaces in temporary
//! folders, built by the real `cpia` binary from the real images of
//! `shared/testdata`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod need;
pub mod process;
pub mod python;
pub mod scratch;
pub mod trees;

/// The `cpia` library, as need.rs (compiled into the library's unit tests
/// too, where this is `crate`) reaches it.
use cpia as lib;

/// The shared test data folder, or `None` after [`need::missing`] (a skip,
/// or in CI a failure).
pub fn testdata() -> Option<PathBuf> {
    need::testdata()
}

/// The shared test data, or returns from the test after [`need::missing`]
/// (a skip, or in CI a failure naming what is missing).
#[macro_export]
macro_rules! require_testdata {
    () => {
        match common::need::testdata() {
            Some(p) => p,
            None => return,
        }
    };
}

/// Returns from the test after [`need::missing`] when no Slurm test cluster
/// is up (`scripts/test.sh` starts one).
#[macro_export]
macro_rules! require_slurm {
    () => {
        if !common::need::slurm() {
            return;
        }
    };
}

/// The CPIA centre-square ROI pipeline, as a template.
pub const TEMPLATE: &str = r#"
[output]
name = "{stem}"

[[route]]
sub_dataset = "{collection}"
scale = "M"

[[steps]]
id = "decode"
op = "decode"

[[steps]]
id = "crop"
op = "crop"
input = "decode"
left = "(w - s) / 2"
top = "(h - s) / 2"
width = "s"
height = "s"

[[steps]]
id = "resize"
op = "resize"
input = "crop"
width = 384
height = 384

[[steps]]
id = "encode"
op = "encode_jpeg"
input = "resize"
quality = 75
"#;

/// A recipe for collection `name` reading source root `root`.
pub fn recipe(name: &str, root: &str) -> String {
    format!(
        "extends = \"templates/centre.toml\"\n\n[collection]\nname = \"{name}\"\nkind = \"roi\"\n\n[inputs]\nsource = \"{root}\"\nsuffixes = [\"png\", \"tif\", \"jpg\"]\n"
    )
}

/// The CPIA geometry scaled down so the small real slides have tiles.
pub const SMALL_GEOMETRY: &str = "\n[[steps]]\nid = \"XL\"\nsize = 384\n[[steps]]\nid = \"L\"\nsize = 96\n[[steps]]\nid = \"M\"\nsize = 48\n[[steps]]\nid = \"S\"\nsize = 12\n";

/// A WSI recipe for collection `name` on the CPIA template, reading source
/// root W, with `extra` appended (step overrides, `[mpp]` tables).
pub fn wsi_recipe(name: &str, extra: &str) -> String {
    format!(
        "extends = \"templates/cpia-wsi.toml\"\n[collection]\nname = \"{name}\"\nkind = \"wsi\"\n[inputs]\nsource = \"W\"\nsuffixes = [\"svs\", \"tif\", \"tiff\"]\n{extra}"
    )
}

/// A workspace in a temporary folder.
pub struct Ws {
    pub dir: tempfile::TempDir,
}

/// The real PNG/TIFF images used by default: (file in testdata/roi).
pub const IMAGES_A: &[&str] = &[
    "histolab_tcga-lung-rgb.png",
    "histolab_high-nuclei-score-level0.png",
    "histolab_kidney-ihc-level0-310-500-360-530.png",
    "nct-crc-he-100k_kather1.tif",
];
pub const IMAGES_B: &[&str] = &[
    "tiatoolbox_source_image.png",
    "skimage_ihc.png",
    "histolab_medium-nuclei-score-level1.png",
];

impl Ws {
    /// Two collections, A and B, with real images.
    pub fn two_collections(td: &Path) -> Ws {
        let ws = Ws::empty();
        ws.write(
            "cpia.toml",
            "[sources]\nA = \"sources/A\"\nB = \"sources/B\"\n",
        );
        ws.write("recipes/templates/centre.toml", TEMPLATE);
        ws.write("recipes/a.toml", &recipe("A", "A"));
        ws.write("recipes/b.toml", &recipe("B", "B"));
        for f in IMAGES_A {
            ws.copy_in(td, f, &format!("sources/A/{f}"));
        }
        for f in IMAGES_B {
            ws.copy_in(td, f, &format!("sources/B/{f}"));
        }
        ws
    }

    /// A WSI workspace: source root `W = "src"` holding `slides` (a file to
    /// copy, and its name there), the shipped CPIA template, and `recipe` as
    /// `recipes/w.toml`.
    pub fn wsi(slides: &[(&Path, &str)], recipe: &str) -> Ws {
        let ws = Ws::empty();
        ws.write("cpia.toml", "[sources]\nW = \"src\"\n");
        ws.write(
            "recipes/templates/cpia-wsi.toml",
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/templates/cpia-wsi.toml"),
            )
            .unwrap(),
        );
        ws.write("recipes/w.toml", recipe);
        std::fs::create_dir_all(ws.path("src")).unwrap();
        for (from, name) in slides {
            std::fs::copy(from, ws.path(&format!("src/{name}"))).unwrap();
        }
        ws
    }

    /// A workspace folder with nothing in it.
    pub fn empty() -> Ws {
        Ws {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn write_bytes(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// Replaces `rel` whole: written beside it under a temporary name, then
    /// renamed over it, so a watcher never sees it half-written.
    pub fn replace(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = p.with_file_name(format!(".{name}.partial"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }

    pub fn copy_in(&self, td: &Path, file: &str, rel: &str) {
        let bytes = std::fs::read(td.join("roi").join(file)).unwrap();
        self.write_bytes(rel, &bytes);
    }

    /// Runs `cpia ARGS` in the workspace (killed, failing the test, if it
    /// hangs: [`process::output`]).
    pub fn cpia(&self, args: &[&str]) -> Output {
        process::output(&mut self.command(args))
    }

    /// The command, for tests that need to spawn it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cpia"));
        c.args(args).current_dir(self.root());
        c.env_remove("CPIA_DEBUG_COUNTERS");
        c
    }

    /// `cpia build --json ARGS`, parsed; panics with the output if the JSON is missing.
    pub fn build(&self, args: &[&str]) -> (serde_json::Value, Output) {
        let mut all = vec!["build", "--json"];
        all.extend_from_slice(args);
        let out = self.cpia(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "no JSON summary ({e}).\nstdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (json, out)
    }

    /// Every file under `dataset/`, with its bytes and mtime.
    pub fn snapshot(&self) -> BTreeMap<String, (Vec<u8>, std::time::SystemTime)> {
        snapshot(&self.path("dataset"))
    }
}

/// Every file under `root`: relative path → (bytes, mtime). The manifests
/// a build keeps in the dataset (`manifests/`) are left out: tests of
/// outputs compare outputs; tests/provenance.rs checks the manifests.
pub fn snapshot(root: &Path) -> BTreeMap<String, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let manifests = root.join("manifests");
    let walk = walkdir::WalkDir::new(root).into_iter();
    for e in walk.filter_entry(|e| e.path() != manifests).flatten() {
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            let mtime = e.metadata().unwrap().modified().unwrap();
            out.insert(rel, (bytes, mtime));
        }
    }
    out
}

/// Counts from a JSON summary.
pub fn counts(j: &serde_json::Value) -> (u64, u64, u64, u64) {
    let g = |k: &str| {
        j[k].as_u64()
            .unwrap_or_else(|| panic!("missing `{k}` in {j}"))
    };
    (g("built"), g("up_to_date"), g("removed"), g("failed"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
