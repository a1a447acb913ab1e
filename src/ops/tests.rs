use std::sync::Arc;

use super::*;

fn ops() -> Vec<Operator> {
    vec![
        Operator::Decode(DecodeParams::default()),
        Operator::Crop(CropParams::centre_square()),
        Operator::Resize(ResizeParams::default()),
        Operator::JpegRoundTrip(JpegParams::default()),
        Operator::EncodeJpeg(JpegParams::default()),
    ]
}

#[test]
fn spellings_normalize() {
    assert_eq!(Filter::parse("catmull-rom"), Filter::parse("CatmullRom"));
    assert_eq!(Filter::parse("Lanczos3").unwrap().as_str(), "lanczos3");
    assert!(Filter::parse("cubic").unwrap_err().contains("lanczos3"));
    assert_eq!(Subsampling::parse("420"), Ok(Subsampling::S420));
    assert_eq!(Subsampling::parse("4:2:2"), Subsampling::parse("422"));
    assert_eq!(Subsampling::parse("444").unwrap().as_str(), "4:4:4");
    assert!(Subsampling::parse("4:1:1").is_err());
    for f in Filter::ALL {
        assert_eq!(Filter::parse(f.as_str()), Ok(f));
    }
    for s in Subsampling::ALL {
        assert_eq!(Subsampling::parse(s.as_str()), Ok(s));
    }
}

#[test]
fn params_are_canonical_and_sorted() {
    let a = Operator::EncodeJpeg(JpegParams {
        quality: 75,
        subsampling: Subsampling::parse("420").unwrap(),
    });
    assert_eq!(
        a.params(),
        vec![
            ("quality", "75".to_string()),
            ("subsampling", "4:2:0".to_string())
        ]
    );
    let e = |t: &str| BoxExpr::parse(t).unwrap();
    let c1 = Operator::Crop(CropParams {
        left: e("(w-s)/2"),
        top: e("(h - s) // 2"),
        width: e("s"),
        height: e(" s "),
    });
    assert_eq!(
        c1.params(),
        Operator::Crop(CropParams::centre_square()).params()
    );
    assert_eq!(c1.params()[1], ("left", "((w-s)/2)".to_string()));
    let r = Operator::Resize(ResizeParams::default()).params();
    assert_eq!(r[0], ("filter", "lanczos3".to_string()));
    for op in ops() {
        let names: Vec<_> = op.params().iter().map(|p| p.0).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "{}", op.name());
    }
}

#[test]
fn catalog_agrees_with_the_operators() {
    let cat = catalog();
    for op in ops() {
        let info = cat.iter().find(|i| i.name == op.name()).unwrap();
        assert_eq!(info.inputs, op.input_kinds());
        assert_eq!(info.output, op.output_kind());
        assert_eq!(op.version(), 1);
        // The defaults in the catalog are exactly the Default params
        // (less those keyed only when set).
        let names: Vec<_> = info
            .params
            .iter()
            .map(|p| p.name)
            .filter(|n| !KEYED_ONLY_WHEN_SET.contains(&(op.name(), n)))
            .collect();
        let op_names: Vec<_> = op.params().iter().map(|p| p.0).collect();
        assert_eq!(names, op_names);
        let keyed = info
            .params
            .iter()
            .filter(|p| !KEYED_ONLY_WHEN_SET.contains(&(op.name(), p.name)));
        for (pi, (_, v)) in keyed.zip(op.params()) {
            // Crop boxes are required: no default to compare.
            let Some(d) = pi.default else {
                assert_eq!(
                    pi.ty,
                    "expression",
                    "{}.{} has no default",
                    op.name(),
                    pi.name
                );
                continue;
            };
            let canon = match pi.ty {
                "expression" => BoxExpr::parse(d).unwrap().canonical(),
                "integer" => d.parse::<u32>().unwrap().to_string(),
                _ if pi.name == "filter" => Filter::parse(d).unwrap().as_str().to_string(),
                _ => Subsampling::parse(d).unwrap().as_str().to_string(),
            };
            assert_eq!(canon, v, "{}.{}", op.name(), pi.name);
        }
    }
    assert_eq!(cat.len(), 5);
    assert!(ENCODER.contains("libjpeg-turbo"));
}

#[test]
fn apply_runs_the_pipeline_and_checks_kinds() {
    let rgb = RgbImage::from_fn(90, 60, |x, y| image::Rgb([x as u8, y as u8, 100]));
    let jpg = encode::encode_jpeg(&rgb, &JpegParams::default()).unwrap();
    let mut v = Value::Bytes(Arc::new(jpg));
    for op in ops() {
        assert!(op.validate().is_ok());
        v = op.apply(std::slice::from_ref(&v)).unwrap();
        assert_eq!(v.kind(), op.output_kind());
    }
    let Value::Encoded(out) = &v else { panic!() };
    let img = decode::decode(out).unwrap();
    assert_eq!(img.dimensions(), (384, 384));

    let resize = Operator::Resize(ResizeParams::default());
    let e = resize.apply(&[]).unwrap_err().0;
    assert!(e.contains("takes 1 input(s), got 0"), "{e}");
    let e = resize.apply(&[v.clone()]).unwrap_err().0;
    assert!(
        e.contains("expects input 1 to be image, got encoded"),
        "{e}"
    );
    let bad = Operator::EncodeJpeg(JpegParams {
        quality: 0,
        subsampling: Subsampling::S444,
    });
    assert!(bad.validate().is_err());
    let bad = Operator::Resize(ResizeParams {
        width: 0,
        height: 1,
        filter: Filter::Box,
    });
    assert!(bad.validate().is_err());
}
