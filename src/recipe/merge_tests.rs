//! Tests of `extends`: templates merged into recipes (`merge.rs`), their
//! errors located in the template, and extends cycles.
use super::super::testing::{load, load_from, pos, single, STEPS};
use crate::ops::{Filter, Operator};

const TEMPLATE: &str = r#"# A centre-square ROI template.
[collection]
kind = "roi"
field = "histo"

[inputs]
source = "unset"
exclude = ["**/.DS_Store"]

[[route]]
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

[[steps]]
id = "encode"
op = "encode_jpeg"
input = "resize"
"#;

#[test]
fn extends_overrides_fields_params_and_routes() {
    let child = r#"extends = "templates/roi.toml"
[collection]
name = "GasHisSDB"
[inputs]
source = "GasHisSDB"
[[steps]]
id = "resize"
width = 224
[[steps]]
id = "encode"
quality = 90
"#;
    let files = [
        ("recipes/templates/roi.toml", TEMPLATE),
        ("recipes/gashis.toml", child),
    ];
    let r = load_from(&files, "recipes/gashis.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.collection.name, "GasHisSDB");
    assert_eq!(r.collection.field, Some(crate::recipe::Field::Histo));
    assert_eq!(r.inputs.source, "GasHisSDB");
    assert_eq!(r.inputs.exclude, vec!["**/.DS_Store".to_string()]);
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.routes[0].scale, crate::recipe::Scale::M);
    match &r.steps[2].op {
        Operator::Resize(p) => {
            assert_eq!((p.width, p.height, p.filter), (224, 384, Filter::Lanczos3))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&r.steps[3].op, Operator::EncodeJpeg(p) if p.quality == 90));
    assert_eq!(
        r.files,
        vec![
            std::path::PathBuf::from("recipes/gashis.toml"),
            std::path::PathBuf::from("recipes/templates/roi.toml")
        ]
    );

    // Routes are replaced wholesale; a new step is appended; `input` overridden.
    let child2 = format!(
        "{child}[[route]]\nglob = \"80/**\"\nscale = \"S\"\n[[route]]\nglob = \"160/**\"\nscale = \"M\"\n[[steps]]\nid = \"crop\"\ninput = \"decode\"\nwidth = \"s / 2\"\n"
    );
    let files = [
        ("recipes/templates/roi.toml", TEMPLATE),
        ("recipes/gashis.toml", child2.as_str()),
    ];
    let r = load_from(&files, "recipes/gashis.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.routes.len(), 2);
    assert_eq!(r.routes[0].scale, crate::recipe::Scale::S);
    match &r.steps[1].op {
        Operator::Crop(c) => {
            assert_eq!(c.width.canonical(), "(s/2)");
            assert_eq!(c.left.canonical(), "((w-s)/2)");
        }
        other => panic!("{other:?}"),
    }
}

/// `hidden = false` keeps files and folders whose name starts with `.`
/// out, whatever `exclude` a recipe sets; it merges key by key, so a
/// template can set it for every recipe.
#[test]
fn hidden_false_skips_dot_files_and_folders() {
    let head = "[collection]\nname = \"X\"\nkind = \"roi\"\n[[route]]\nscale = \"M\"\n";
    let r = load(&format!(
        "{head}[inputs]\nsource = \"X\"\nsuffixes = [\"png\"]\n{STEPS}"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.inputs.hidden, "default: hidden files are inputs");
    assert!(r.inputs.accepts("a/._x.png") && r.inputs.accepts(".cache/x.png"));

    let template = format!("[inputs]\nhidden = false\nexclude = [\"**/masks/**\"]\n{STEPS}");
    let child = format!(
        "extends = \"templates/t.toml\"\n{head}[inputs]\nsource = \"X\"\nsuffixes = [\"png\"]\nexclude = [\"**/*_anno.png\"]\n"
    );
    let files = [
        ("recipes/templates/t.toml", template.as_str()),
        ("recipes/x.toml", child.as_str()),
    ];
    let h = load_from(&files, "recipes/x.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(!h.inputs.hidden);
    for rel in [
        "a/._x.png",
        "._x.png",
        ".ipynb_checkpoints/x.png",
        "a/.b/c/x.png",
        "a/x_anno.png",
    ] {
        assert!(!h.inputs.accepts(rel), "{rel} accepted");
    }
    for rel in ["a/x.png", "x.png", "a/b.c/x.png", "masks/x.png"] {
        assert!(h.inputs.accepts(rel), "{rel} refused");
    }
    // Part of the recipe hash only when set, so older recipes keep theirs.
    let explicit = load(&format!(
        "{head}[inputs]\nsource = \"X\"\nsuffixes = [\"png\"]\nhidden = true\n{STEPS}"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(explicit.hash, r.hash);
    let off = load(&format!(
        "{head}[inputs]\nsource = \"X\"\nsuffixes = [\"png\"]\nhidden = false\n{STEPS}"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(off.hash, r.hash);

    let text = format!("{head}[inputs]\nsource = \"X\"\nhidden = \"no\"\n{STEPS}");
    single(&text, "`inputs.hidden` must be a boolean", "\"no\"", 0, 0);
}

#[test]
fn extends_changing_op_drops_template_params() {
    let child = "extends = \"templates/roi.toml\"\n[collection]\nname = \"X\"\n[[steps]]\nid = \"crop\"\nop = \"resize\"\nwidth = 100\n";
    let files = [
        ("recipes/templates/roi.toml", TEMPLATE),
        ("recipes/x.toml", child),
    ];
    let r = load_from(&files, "recipes/x.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&r.steps[1].op, Operator::Resize(p) if p.width == 100 && p.height == 384));
}

#[test]
fn template_errors_are_located_in_the_template() {
    let bad = TEMPLATE.replace("op = \"resize\"", "op = \"resise\"");
    let child = "extends = \"templates/roi.toml\"\n[collection]\nname = \"X\"\n";
    let files = [
        ("recipes/templates/roi.toml", bad.as_str()),
        ("recipes/x.toml", child),
    ];
    let e = match load_from(&files, "recipes/x.toml") {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert_eq!(e.0.len(), 1, "{e}");
    let d = &e.0[0];
    assert_eq!(
        d.file,
        std::path::PathBuf::from("recipes/templates/roi.toml")
    );
    assert_eq!((d.line, d.column), pos(&bad, "\"resise\"", 0));
    // Syntax errors too.
    let files = [
        ("recipes/templates/roi.toml", "[collection\n"),
        ("recipes/x.toml", child),
    ];
    let e = load_from(&files, "recipes/x.toml")
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert_eq!(
        e.0[0].file,
        std::path::PathBuf::from("recipes/templates/roi.toml")
    );
    assert_eq!(e.0[0].line, 1);
}

#[test]
fn extends_cycle() {
    let a = "extends = \"b.toml\"\n[collection]\nname = \"A\"\n";
    let b = "# b\nextends = \"./sub/../a.toml\"\n";
    let files = [("recipes/a.toml", a), ("recipes/b.toml", b)];
    let e = load_from(&files, "recipes/a.toml")
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert_eq!(e.0.len(), 1, "{e}");
    let d = &e.0[0];
    assert_eq!(
        d.message,
        "extends cycle: recipes/a.toml -> recipes/b.toml -> recipes/a.toml"
    );
    assert_eq!(d.file, std::path::PathBuf::from("recipes/b.toml"));
    assert_eq!((d.line, d.column), (2, 11));
    // Self-extension.
    let s = "extends = \"s.toml\"\n";
    let e = load_from(&[("recipes/s.toml", s)], "recipes/s.toml")
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert_eq!(
        e.0[0].message,
        "extends cycle: recipes/s.toml -> recipes/s.toml"
    );
}

#[test]
fn hash_is_the_same_with_or_without_a_template() {
    let child =
        "extends = \"templates/roi.toml\"\n[collection]\nname = \"X\"\n[inputs]\nsource = \"X\"\n";
    let files = [
        ("recipes/templates/roi.toml", TEMPLATE),
        ("recipes/x.toml", child),
    ];
    let via = load_from(&files, "recipes/x.toml").unwrap_or_else(|e| panic!("{e}"));
    let flat = TEMPLATE
        .replace("kind = \"roi\"", "kind = \"roi\"\nname = \"X\"")
        .replace("source = \"unset\"", "source = \"X\"");
    let flat = load(&flat).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(via.hash, flat.hash);
    // The canonical text is what the hash hashes (the archive shows it).
    assert_eq!(
        blake3::hash(via.canonical().as_bytes()).to_hex().as_str(),
        via.hash
    );
    assert_eq!(via.canonical(), flat.canonical());
}
