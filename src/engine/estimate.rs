//! How much memory a job needs, estimated before it starts from what is
//! known without decoding: an ROI file's header ([`crate::ops::probe`]) and
//! its recipe's parameters, or a WSI cell's geometry.
//!
//! An ROI job is simulated step by step in the order `evaluate` runs it,
//! with the same rule for dropping values ([`super::evaluate::drops`]): its
//! need is the peak of the source bytes, the values alive, and each step's
//! own buffers (a decoder's native samples or coefficients, a resize's
//! horizontal pass, the encoder's worst-case output buffer). A WSI cell's
//! need is its region as read, the resize to the standardized size (when the
//! slide is not at native scale), the standardized image, each writing
//! step's tiles at their raw size, the encoder buffers and the reader's.

use crate::ops::probe::Header;
use crate::ops::wsi::TissueParams;
use crate::ops::{Filter, Operator};
use crate::plan::UnitAction;
use crate::recipe::Recipe;

/// A job's estimated need and, for messages, what it is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub bytes: u64,
    pub what: String,
}

/// What the OpenSlide cache (32 MiB in 3.4.1) and the direct reader's tile
/// buffers add while a cell is read.
const READER_BYTES: u64 = 40 << 20;

/// Bytes of a QC thumbnail job (at most [`super::wsi::QC_EDGE`]² RGB, twice:
/// the strips read and the picture).
pub fn thumbnail() -> Need {
    let edge = u64::from(super::wsi::QC_EDGE);
    Need {
        bytes: edge * edge * 3 * 2 + READER_BYTES,
        what: "a QC thumbnail".into(),
    }
}

fn rgb(w: u32, h: u32) -> u64 {
    u64::from(w) * u64::from(h) * 3
}

/// The need of building `sinks` of `recipe` from a source of `file_len`
/// bytes whose header is `header` (None if it could not be read: the decode
/// step will fail at once, so only the bytes count).
pub fn roi(recipe: &Recipe, sinks: &[usize], file_len: u64, header: Option<&Header>) -> Need {
    let Some(header) = header else {
        return Need {
            bytes: file_len,
            what: format!("{file_len} bytes of an unreadable file"),
        };
    };
    let needed = recipe.ancestors(sinks);
    let drops = super::evaluate::drops(recipe, &needed, sinks);
    let n = recipe.steps.len();
    // Per step: its value's bytes (0 when shared with its input) and size.
    let mut bytes = vec![0u64; n];
    let mut dims: Vec<Option<(u32, u32)>> = vec![None; n];
    let mut live = file_len;
    let mut peak = live;
    for (i, step) in recipe.steps.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        let input = step.inputs.first().copied();
        let in_dims = input.and_then(|j| dims[j]);
        // (bytes of the output, bytes held only while the step runs, size)
        let (out, transient, size) = match (&step.op, in_dims) {
            (Operator::Decode(_), _) => {
                let (w, h) = (header.width, header.height);
                (
                    rgb(w, h),
                    header.decode_bytes.saturating_sub(rgb(w, h)),
                    Some((w, h)),
                )
            }
            (Operator::Crop(p), Some((w, h))) => match crate::ops::crop::eval_box(p, w, h) {
                // The whole image: the same pixels, shared (see Operator::apply).
                Ok((0, 0, cw, ch)) if (cw, ch) == (i64::from(w), i64::from(h)) => {
                    (0, 0, Some((w, h)))
                }
                Ok((_, _, cw, ch))
                    if cw > 0 && ch > 0 && cw <= i64::from(w) && ch <= i64::from(h) =>
                {
                    let (cw, ch) = (cw as u32, ch as u32);
                    (rgb(cw, ch), 0, Some((cw, ch)))
                }
                // The crop fails for this image: nothing after it runs.
                _ => (0, 0, None),
            },
            (Operator::Resize(p), Some((_, h))) => {
                let horizontal = if p.filter == Filter::Nearest {
                    0
                } else {
                    rgb(p.width, h)
                };
                (
                    rgb(p.width, p.height),
                    horizontal,
                    Some((p.width, p.height)),
                )
            }
            (Operator::JpegRoundTrip(p), Some((w, h))) => {
                // A new image of the same size, and the JPEG it went through.
                let worst = crate::ops::encode::worst_case_bytes(w, h, p.subsampling);
                (rgb(w, h), worst, Some((w, h)))
            }
            (Operator::EncodeJpeg(p), Some((w, h))) => {
                let worst = crate::ops::encode::worst_case_bytes(w, h, p.subsampling);
                // The output, and the buffer it is encoded into.
                (worst, worst, None)
            }
            _ => (0, 0, None),
        };
        peak = peak.max(live + transient + out);
        bytes[i] = out;
        dims[i] = size;
        live += out;
        if out == 0 && size.is_some() {
            // A shared value: its bytes move to it when its input is dropped
            // here, and otherwise stay counted on the input (over, not under).
            if let Some(j) = input.filter(|j| drops[i].contains(j)) {
                bytes[i] = bytes[j];
                bytes[j] = 0;
            }
        }
        for &j in &drops[i] {
            live -= bytes[j];
        }
    }
    Need {
        bytes: peak,
        what: format!(
            "a {}×{} {} decoded, with its crop, resize and encoding buffers",
            header.width,
            header.height,
            header.format.name()
        ),
    }
}

/// The need of building the units `actions` of one grid cell.
pub fn cell(actions: &[&UnitAction]) -> Need {
    let Some(first) = actions.first() else {
        return Need {
            bytes: 0,
            what: "nothing".into(),
        };
    };
    let recipe = &first.spec.recipe;
    let n = first.unit.read_size;
    let size = crate::plan::expand::grid_params(recipe).map_or(n, |g| g.size);
    let region = rgb(n, n);
    let standardize = if n == size {
        0
    } else {
        rgb(size, n) + rgb(size, size)
    };
    let tiles = rgb(size, size) * actions.len() as u64;
    let encoders =
        2 * crate::ops::encode::worst_case_bytes(size, size, crate::ops::Subsampling::S444);
    let mask = recipe
        .steps
        .iter()
        .find_map(|s| match &s.op {
            Operator::Tissue(TissueParams::Otsu(o)) => {
                Some(u64::from(o.thumbnail) * u64::from(o.thumbnail) * 3 * 2)
            }
            _ => None,
        })
        .unwrap_or(0);
    Need {
        bytes: region + standardize + tiles + encoders + mask + READER_BYTES,
        what: format!(
            "a {n}×{n} region standardized to {size}×{size}, with {} writing step(s)",
            actions.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::probe::Format;

    fn recipe(steps: &str) -> Recipe {
        let text = format!("[collection]\nname = \"X\"\nkind = \"roi\"\n[inputs]\nsource = \"X\"\n[[route]]\nscale = \"M\"\n{steps}");
        crate::recipe::load_recipe(std::path::Path::new("x.toml"), &mut |_| Ok(text.clone()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const STANDARD: &str = "[[steps]]\nid = \"d\"\nop = \"decode\"\n[[steps]]\nid = \"c\"\nop = \"crop\"\ninput = \"d\"\nleft = \"(w - s) / 2\"\ntop = \"(h - s) / 2\"\nwidth = \"s\"\nheight = \"s\"\n[[steps]]\nid = \"r\"\nop = \"resize\"\ninput = \"c\"\n[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"r\"\n";

    fn header(w: u32, h: u32) -> Header {
        Header {
            format: Format::Png,
            width: w,
            height: h,
            decode_bytes: rgb(w, h) * 2,
        }
    }

    #[test]
    fn the_peak_of_the_standard_pipeline() {
        let r = recipe(STANDARD);
        // A square image: the crop shares the decoded pixels; the peak is
        // the decode (native buffer + RGB) or the resize beside the image.
        let need = roi(&r, &r.sinks, 1000, Some(&header(4000, 4000)));
        let img = rgb(4000, 4000);
        assert_eq!(need.bytes, 1000 + 2 * img);
        assert!(need.what.contains("4000×4000 PNG"), "{}", need.what);
        // A wide image: decoded + its square crop, then crop + resize.
        let need = roi(&r, &r.sinks, 0, Some(&header(6000, 3000)));
        assert_eq!(need.bytes, 2 * rgb(6000, 3000));
        let small = roi(&r, &r.sinks, 0, Some(&header(300, 200)));
        let decoded_and_crop = 2 * rgb(300, 200);
        assert!(small.bytes >= decoded_and_crop, "{small:?}");
    }

    #[test]
    fn a_long_chain_holds_two_images_not_all() {
        let mut steps = String::from("[[steps]]\nid = \"d\"\nop = \"decode\"\n");
        for i in 0..50 {
            let input = if i == 0 {
                "d".to_string()
            } else {
                format!("r{}", i - 1)
            };
            steps.push_str(&format!("[[steps]]\nid = \"r{i}\"\nop = \"resize\"\ninput = \"{input}\"\nwidth = 1000\nheight = 1000\n"));
        }
        steps.push_str("[[steps]]\nid = \"e\"\nop = \"encode_jpeg\"\ninput = \"r49\"\n");
        let r = recipe(&steps);
        let need = roi(&r, &r.sinks, 0, Some(&header(1000, 1000)));
        assert!(need.bytes < 5 * rgb(1000, 1000), "{need:?}");
    }
}
