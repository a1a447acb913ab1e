//! Tests of recipe loading (`load.rs`).
use super::super::testing::{errors, load, load_from, pos, single, BREAKHIS, STEPS};
use crate::ops::{Filter, Operator, Subsampling};

/// A minimal valid head (collection, inputs, one match-all route).
const HEAD: &str = "[collection]\nname = \"X\"\nkind = \"roi\"\n[inputs]\nsource = \"X\"\n[[route]]\nscale = \"M\"\n";

fn with_steps(head: &str, steps: &str) -> String {
    format!("{head}{steps}")
}

#[test]
fn breakhis_loads_into_a_sorted_dag() {
    let r = match load(BREAKHIS) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let ids: Vec<&str> = r.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["decode", "crop", "resize", "encode"]);
    assert_eq!(r.steps[3].inputs, vec![2]);
    assert!(r.steps[0].inputs.is_empty());
    assert_eq!(r.sinks, vec![3]);
    assert_eq!(r.collection.organs, vec!["breast".to_string()]);
    assert_eq!(r.inputs.suffixes, vec!["png".to_string()]);
    assert!(r.inputs.accepts("benign/a/x-40-1.png"));
    assert!(!r.inputs.accepts("benign/a/x_anno.png"));
    assert_eq!(r.files, vec![std::path::PathBuf::from("recipes/test.toml")]);
    assert_eq!(r.hash.len(), 64);
    match &r.steps[3].op {
        Operator::EncodeJpeg(j) => {
            assert_eq!((j.quality, j.subsampling), (75, Subsampling::S420))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn steps_are_sorted_topologically_whatever_the_declaration_order() {
    let text = with_steps(
        HEAD,
        "[[steps]]\nid = \"enc\"\nop = \"encode_jpeg\"\ninput = \"dec\"\n[[steps]]\nid = \"dec\"\nop = \"decode\"\n",
    );
    let r = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = r.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["dec", "enc"]);
    assert_eq!(r.steps[1].inputs, vec![0]);
    assert_eq!(r.sinks, vec![1]);
    // Defaults of encode_jpeg.
    assert!(matches!(&r.steps[1].op, Operator::EncodeJpeg(j) if j.quality == 75));
}

#[test]
fn toml_syntax_error() {
    let text = "[collection]\nname = \"X\nkind = \"roi\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].message.starts_with("TOML syntax:"),
        "{}",
        errs[0].message
    );
    assert_eq!(errs[0].line, 2, "{}", errs[0]);
}

#[test]
fn unknown_key_with_suggestion() {
    let text = BREAKHIS.replace("stain =", "stian =");
    let d = single(&text, "unknown key `stian` in [collection]", "stian", 0, 0);
    assert!(d.hint.unwrap_or_default().contains("did you mean `stain`?"));
    let text = BREAKHIS.replace("[[steps]]", "[[step]]");
    let errs = errors(&text);
    assert!(errs
        .iter()
        .any(|d| d.message == "unknown key `step` in the recipe"
            && d.hint
                .as_deref()
                .unwrap_or("")
                .contains("did you mean `steps`?")));
}

#[test]
fn wrong_type() {
    let text = BREAKHIS.replace("year = 2016", "year = \"2016\"");
    single(
        &text,
        "`collection.year` must be an integer, found a string",
        "\"2016\"",
        0,
        0,
    );
    let text = BREAKHIS.replace("organs = \"breast\"", "organs = [\"breast\", 3]");
    single(
        &text,
        "`collection.organs` must list strings, found an integer",
        "3]",
        0,
        0,
    );
}

#[test]
fn unknown_operator_renders_like_rustc() {
    let text = "[collection]\nname = \"X\"\nkind = \"roi\"\n[inputs]\nsource = \"X\"\n[[route]]\nscale = \"M\"\n[[steps]]\nid = \"d\"\nop = \"decode\"\n[[steps]]\nid = \"r\"\nop = \"resise\"\ninput = \"d\"\n";
    let d = single(text, "unknown operator `resise`", "\"resise\"", 0, 0);
    assert_eq!((d.line, d.column), (13, 6));
    let want = "error: unknown operator `resise`\n  --> recipes/test.toml:13:6\n   |\n13 | op = \"resise\"\n   |      ^^^^^^^^\n   = hint: did you mean `resize`? known operators: decode, crop, resize, encode_jpeg, jpeg_round_trip, wsi_grid, tissue, subtiles, encode_tiles\n";
    assert_eq!(d.to_string(), want);
}

#[test]
fn unknown_input() {
    let text = BREAKHIS.replace("input = \"decode\"", "input = \"decod\"");
    let d = single(
        &text,
        "unknown input `decod` of step `crop`",
        "\"decod\"",
        0,
        0,
    );
    let hint = d.hint.unwrap_or_default();
    assert!(hint.contains("did you mean `decode`?"), "{hint}");
    assert!(hint.contains("decode, crop, resize, encode"), "{hint}");
}

#[test]
fn duplicate_id() {
    let text = with_steps(
        HEAD,
        "[[steps]]\nid = \"d\"\nop = \"decode\"\n[[steps]]\nid = \"d\"\nop = \"decode\"\n[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"d\"\n",
    );
    let d = single(&text, "duplicate step id `d`", "\"d\"", 1, 0);
    assert!(d
        .hint
        .unwrap_or_default()
        .contains("first defined at recipes/test.toml:9:6"));
}

#[test]
fn cycle_is_printed_as_a_path() {
    let text = BREAKHIS.replace("input = \"decode\"", "input = \"resize\"");
    let d = single(&text, "cycle: crop -> resize -> crop", "\"crop\"", 0, 0);
    assert_eq!(d.message, "cycle: crop -> resize -> crop");
    let self_loop = BREAKHIS.replace("input = \"crop\"", "input = \"resize\"");
    single(
        &self_loop,
        "cycle: resize -> resize",
        "id = \"resize\"",
        0,
        5,
    );
}

#[test]
fn value_kinds_and_sinks() {
    // crop without input would get bytes.
    let text = BREAKHIS.replace("input = \"decode\"\n", "");
    let d = single(
        &text,
        "step `crop` (crop) needs an image but has no `input`",
        "\"crop\"",
        1,
        0,
    );
    assert_eq!(d.hint.as_deref(), Some("add `input = \"decode\"`"));
    // decode fed by a step.
    let text = with_steps(
        HEAD,
        "[[steps]]\nid = \"a\"\nop = \"decode\"\n[[steps]]\nid = \"b\"\nop = \"decode\"\ninput = \"a\"\n[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"b\"\n",
    );
    single(
        &text,
        "needs the source file's bytes but its input `a` produces an image",
        "\"a\"",
        1,
        0,
    );
    // encode fed by an encode.
    let text = BREAKHIS.replace("[[steps]]\nid = \"encode\"", "[[steps]]\nid = \"again\"\nop = \"encode_jpeg\"\ninput = \"encode\"\n[[steps]]\nid = \"encode\"");
    single(
        &text,
        "its input `encode` produces encoded JPEG bytes",
        "\"encode\"",
        0,
        0,
    );
    // A resize nothing consumes is a sink that is not encode_jpeg.
    let text = format!("{BREAKHIS}[[steps]]\nid = \"extra\"\nop = \"resize\"\ninput = \"crop\"\n");
    single(&text, "step `extra` (resize) is a sink", "\"extra\"", 0, 0);
    // Two inputs to a one-input operator.
    let text = BREAKHIS.replace("input = \"resize\"", "inputs = [\"resize\", \"crop\"]");
    single(&text, "takes one input, 2 are given", "\"crop\"]", 0, 0);
}

#[test]
fn bad_regex_and_glob() {
    let text = BREAKHIS.replace("'-(40)-'", "'-(40-'");
    // The regex error's caret is mapped into the file: `(` opens the group.
    single(&text, "invalid regex: unclosed group", "(40-'", 0, 0);
    let text = BREAKHIS.replace(
        "include = [\"**/*.png\"]",
        "include = [\"**/*.png\", \"a/[b\"]",
    );
    single(&text, "invalid glob `a/[b`", "\"a/[b\"", 0, 0);
    let text = BREAKHIS.replace("regex = '-(40)-'", "regex = '-(40)-'\nglob = \"**\"");
    single(
        &text,
        "either `glob` or `regex`, not both",
        "'-(40)-'",
        0,
        0,
    );
}

#[test]
fn bad_expression_points_into_the_string() {
    let text = BREAKHIS.replace("left = \"(w - s) / 2\"", "left = \"(w - q) / 2\"");
    // `q` is at offset 5 of the expression, plus the opening quote.
    single(
        &text,
        "invalid expression for `left`: unknown name `q`",
        "\"(w - q)",
        0,
        6,
    );
    let text = BREAKHIS.replace("width = \"s\"", "width = true");
    single(
        &text,
        "`width` of `crop` must be an expression string",
        "true",
        0,
        0,
    );
    let text = BREAKHIS.replace("height = \"s\"\n", "");
    single(
        &text,
        "operator `crop` requires the parameter `height`",
        "\"crop\"",
        1,
        0,
    );
}

#[test]
fn params_typed_with_spans() {
    let text = BREAKHIS.replace("quality = 75", "quality = 101");
    single(
        &text,
        "`quality` of `encode_jpeg` must be in 1..=100",
        "101",
        0,
        0,
    );
    let text = BREAKHIS.replace("width = 384", "width = \"384\"");
    single(
        &text,
        "`width` of `resize` must be an integer, found string",
        "\"384\"",
        0,
        0,
    );
    let text = BREAKHIS.replace("quality = 75", "qualty = 75");
    let d = single(
        &text,
        "unknown parameter `qualty` for operator `encode_jpeg`",
        "qualty",
        0,
        0,
    );
    assert!(d
        .hint
        .unwrap_or_default()
        .contains("did you mean `quality`?"));
    let text = BREAKHIS.replace("filter = \"lanczos3\"", "filter = \"lanczos\"");
    single(&text, "unknown filter `lanczos`", "\"lanczos\"", 0, 0);
    let text = BREAKHIS.replace("subsampling = \"4:2:0\"", "subsampling = \"4:1:1\"");
    single(&text, "unknown subsampling `4:1:1`", "\"4:1:1\"", 0, 0);
    let text = BREAKHIS.replace("op = \"decode\"", "op = \"decode\"\nformat = \"png\"");
    single(
        &text,
        "unknown parameter `format` for operator `decode`",
        "format",
        0,
        0,
    );
    let text = BREAKHIS
        .replace("subsampling = \"4:2:0\"", "subsampling = \"444\"")
        .replace("filter = \"lanczos3\"", "filter = \"Catmull-Rom\"");
    let r = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(&r.steps[2].op, Operator::Resize(p) if p.filter == Filter::CatmullRom));
    assert!(
        matches!(&r.steps[3].op, Operator::EncodeJpeg(p) if p.subsampling == Subsampling::S444)
    );
}

#[test]
fn bad_templates() {
    let text = BREAKHIS.replacen("class = \"{dir}\"", "class = \"{drr}\"", 1);
    let d = single(&text, "unknown template variable `drr`", "{drr}", 0, 0);
    assert!(d.hint.unwrap_or_default().contains("did you mean `dir`?"));
    let text = BREAKHIS.replacen("\"BreaKHis_{1}x\"", "\"BreaKHis_{2}x\"", 1);
    single(
        &text,
        "capture `{2}` does not exist: the route's regex has 1 group(s)",
        "{2}",
        0,
        0,
    );
    let text = BREAKHIS.replacen("\"BreaKHis_{1}x\"", "\"BreaKHis_{1x\"", 1);
    single(
        &text,
        "invalid sub_dataset template: unclosed `{`",
        "{1x",
        0,
        0,
    );
    let text = BREAKHIS.replacen("\"BreaKHis_{1}x\"", "\"{class}\"", 1);
    single(
        &text,
        "`{class}` cannot be used in `sub_dataset`",
        "{class}\"",
        0,
        0,
    );
    let text = BREAKHIS.replace("name = \"{class}_{stem}\"", "name = \"{class}_{3}\"");
    single(&text, "capture `{3}` does not exist", "{3}", 0, 0);
}

#[test]
fn output_class_requires_a_class_on_every_route() {
    let text = BREAKHIS.replacen("class = \"{dir}\"\n", "", 1);
    let d = single(
        &text,
        "the output name uses `{class}` but a route gives no class",
        "{class}_",
        0,
        0,
    );
    let (line, col) = pos(&text, "[[route]]", 0);
    let want = format!("the route is at recipes/test.toml:{line}:{col}");
    assert!(d.hint.unwrap_or_default().contains(&want), "{want}");
}

#[test]
fn escaping_sub_dataset_is_rejected_at_load() {
    let text = BREAKHIS.replacen("\"BreaKHis_{1}x\"", "\"../escape\"", 1);
    let d = single(
        &text,
        "sub_dataset `../escape` contains a path separator `/`",
        "/escape",
        0,
        0,
    );
    assert!(d.hint.unwrap_or_default().contains("safe path component"));
    let text = BREAKHIS.replacen("\"BreaKHis_{1}x\"", "\"a/{1}\"", 1);
    single(
        &text,
        "sub_dataset `a/{1}` contains a path separator `/`",
        "/{1}",
        0,
        0,
    );
    let text = BREAKHIS.replace("name = \"BreakHis\"", "name = \"..\"");
    single(&text, "collection name `..`", "\"..\"", 0, 0);
}

#[test]
fn missing_and_invalid_metadata() {
    let text = BREAKHIS.replace("name = \"BreakHis\"\n", "");
    single(
        &text,
        "missing required key `collection.name`",
        "[collection]",
        0,
        0,
    );
    let text = BREAKHIS.replace("kind = \"roi\"", "kind = \"tma\"");
    single(&text, "unknown collection kind `tma`", "\"tma\"", 0, 0);
    let text = BREAKHIS.replace("field = \"histo\"", "field = \"hist\"");
    let d = single(&text, "unknown field `hist`", "\"hist\"", 0, 0);
    assert!(d.hint.unwrap_or_default().contains("did you mean `histo`?"));
    let text = BREAKHIS.replacen("scale = \"L\"", "scale = \"XXL\"", 1);
    single(&text, "unknown scale `XXL`", "\"XXL\"", 0, 0);
}

#[test]
fn independent_errors_are_collected() {
    let text = BREAKHIS
        .replace("stain =", "stian =")
        .replace("'-(40)-'", "'-(40-'")
        .replace("op = \"resize\"", "op = \"resise\"")
        .replace("quality = 75", "quality = 0");
    let errs = errors(&text);
    let msgs: Vec<&str> = errs.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(errs.len(), 4, "{msgs:#?}");
    // In file order.
    let lines: Vec<usize> = errs.iter().map(|d| d.line).collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(lines, sorted);
}

#[test]
fn wsi_recipes_take_wsi_steps_and_reject_roi_steps() {
    let head = "[collection]\nname = \"CAMELYON16\"\nkind = \"wsi\"\n[inputs]\nsource = \"c16\"\nsuffixes = \"tif\"\n";
    let text = format!("{head}[[steps]]\nid = \"t\"\nop = \"wsi_tiles\"\n");
    let d = single(&text, "unknown operator `wsi_tiles`", "\"wsi_tiles\"", 0, 0);
    assert!(d.hint.unwrap_or_default().contains("wsi_grid"));
    // ROI steps in a WSI recipe: `decode` would get a slide region, not bytes.
    let text = format!("{head}{STEPS}");
    let e = load(&text).unwrap_err().to_string();
    assert!(e.contains("slide region"), "{e}");
    // WSI steps and no routes: loads (routes are optional for WSI).
    let text = format!("{head}[[steps]]\nid = \"g\"\nop = \"wsi_grid\"\nsize = 384\n[[steps]]\nid = \"w\"\nop = \"encode_tiles\"\ninput = \"g\"\nscale = \"XL\"\n");
    let r = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.collection.kind, crate::recipe::Kind::Wsi);
    assert_eq!(r.route("a.tif"), Ok(None));
}

#[test]
fn roi_needs_routes_and_steps() {
    let text = "[collection]\nname = \"X\"\nkind = \"roi\"\n[inputs]\nsource = \"X\"\n";
    let errs = errors(text);
    let msgs: Vec<&str> = errs.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "an ROI recipe needs at least one `[[route]]`",
            "the recipe has no `[[steps]]`"
        ]
    );
    assert_eq!((errs[0].line, errs[0].column), (1, 1));
}

#[test]
fn unreadable_files() {
    let e = match load_from(&[], "recipes/none.toml") {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].message.starts_with("cannot read recipe:"));
    assert!(e.to_string().contains("--> recipes/none.toml"));
    let text = format!("extends = \"missing.toml\"\n{BREAKHIS}");
    single(
        &text,
        "cannot read template `recipes/missing.toml`",
        "\"missing.toml\"",
        0,
        0,
    );
}

/// `n` resize steps chained after decode, then an encoder.
fn chain(n: usize) -> String {
    let mut s = String::from(HEAD);
    s.push_str("[[steps]]\nid = \"decode\"\nop = \"decode\"\n");
    for i in 0..n {
        let input = if i == 0 {
            "decode".to_string()
        } else {
            format!("r{}", i - 1)
        };
        s.push_str(&format!(
            "[[steps]]\nid = \"r{i}\"\nop = \"resize\"\ninput = \"{input}\"\n"
        ));
    }
    s.push_str(&format!(
        "[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"r{}\"\n",
        n - 1
    ));
    s
}

#[test]
fn long_chains_load_and_too_many_steps_is_one_located_error() {
    // Loading walks nothing recursively: the longest chain allowed loads
    // on a 256 KiB stack (the main thread has 8 MiB).
    let n = crate::recipe::MAX_STEPS - 2;
    let text = chain(n);
    let r = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || load(&text).map(|r| (r.steps.len(), r.sinks)))
        .unwrap()
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r, (n + 2, vec![n + 1]));
    let text = chain(n + 1);
    let d = single(
        &text,
        "the recipe has 10001 steps, more than the limit of 10000",
        "[[steps]]",
        10_000,
        0,
    );
    assert!(d.hint.unwrap_or_default().contains("first step beyond"));
    // A cycle through a long chain is found and printed without recursion.
    let text = chain(3000).replace("input = \"decode\"", "input = \"r2999\"");
    let d = single(&text, "cycle: r0 -> r1 -> r2 ->", "\"r0\"", 0, 0);
    assert!(
        d.message.ends_with("r2999 -> r0"),
        "{}",
        &d.message[d.message.len() - 40..]
    );
}

#[test]
fn merged_steps_beyond_the_bound_and_huge_files_are_errors() {
    let half = crate::recipe::MAX_STEPS / 2 + 1;
    let steps = |prefix: &str| {
        (0..half)
            .map(|i| format!("[[steps]]\nid = \"{prefix}{i}\"\nop = \"decode\"\n"))
            .collect::<String>()
    };
    let template = format!("{HEAD}{}", steps("t"));
    let child = format!("extends = \"t.toml\"\n{}", steps("c"));
    let files = [
        ("recipes/t.toml", template.as_str()),
        ("recipes/x.toml", child.as_str()),
    ];
    let e = load_from(&files, "recipes/x.toml")
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert_eq!(e.0.len(), 1, "{e}");
    assert!(
        e.0[0].message.contains("more than the limit of 10000"),
        "{e}"
    );
    assert_eq!(e.0[0].file, std::path::PathBuf::from("recipes/x.toml"));
    let huge = format!("{HEAD}# {}\n", "x".repeat(crate::recipe::MAX_RECIPE_BYTES));
    let e = errors(&huge);
    assert!(
        e[0].message.contains("more than the limit of 8388608"),
        "{}",
        e[0]
    );
}

#[test]
fn a_resize_beyond_the_decode_limit_is_refused_at_load() {
    let text = BREAKHIS.replace("width = 384\nheight = 384", "width = 40000\nheight = 40000");
    let d = single(
        &text,
        "`resize` to 40000×40000 makes 1600000000 pixels",
        "40000",
        0,
        0,
    );
    assert!(d.message.contains("cannot be useful"), "{}", d.message);
    // The largest square within the limit loads.
    let text = BREAKHIS.replace("width = 384\nheight = 384", "width = 32768\nheight = 32768");
    load(&text).unwrap_or_else(|e| panic!("{e}"));
    let text = BREAKHIS.replace("width = 384\nheight = 384", "height = 32769\nwidth = 32768");
    single(&text, "makes 1073774592 pixels", "32768", 0, 0);
}

#[test]
fn long_expressions_are_refused_at_load() {
    let deep = format!("left = \"{}w{}\"", "(".repeat(5000), ")".repeat(5000));
    let text = BREAKHIS.replace("left = \"(w - s) / 2\"", &deep);
    single(
        &text,
        "expression longer than 256 characters",
        "((((",
        0,
        256,
    );
}

#[test]
fn hash_ignores_formatting_and_tracks_semantics() {
    let base = load(BREAKHIS).unwrap_or_else(|e| panic!("{e}")).hash;
    let reformatted = BREAKHIS
        .replace("\n[", "\n\n# comment\n[")
        .replace(" = ", "   =   ")
        .replace("\"(w - s) / 2\"", "\"(w-s)/2\"")
        .replace("year = 2016", "year = 2_016");
    assert_eq!(
        load(&reformatted).unwrap_or_else(|e| panic!("{e}")).hash,
        base
    );
    // Key order inside a table does not matter either.
    let reordered = BREAKHIS.replace(
        "width = 384\nheight = 384\nfilter = \"lanczos3\"",
        "filter = \"lanczos3\"\nheight = 384\nwidth = 384",
    );
    assert_eq!(
        load(&reordered).unwrap_or_else(|e| panic!("{e}")).hash,
        base
    );
    // Defaults and explicit values are the same recipe.
    let defaults = BREAKHIS.replace("quality = 75\nsubsampling = \"4:2:0\"\n", "");
    assert_eq!(load(&defaults).unwrap_or_else(|e| panic!("{e}")).hash, base);
    let changed = BREAKHIS.replace("quality = 75", "quality = 76");
    assert_ne!(load(&changed).unwrap_or_else(|e| panic!("{e}")).hash, base);
    let changed = BREAKHIS.replace("top = \"(h - s) / 2\"", "top = \"(h - s) / 3\"");
    assert_ne!(load(&changed).unwrap_or_else(|e| panic!("{e}")).hash, base);
    let changed = BREAKHIS.replacen("scale = \"L\"", "scale = \"M\"", 1);
    assert_ne!(load(&changed).unwrap_or_else(|e| panic!("{e}")).hash, base);
}
