//! Gathering a report: the workspace's collections ([`super::collections`]),
//! the state's aggregates ([`crate::store::overview`]) and the published
//! counts ([`super::published`]), put side by side.
//!
//! Cost: the aggregates read a row per WSI unit, ROI output and input, never
//! per tile; samples are bounded per sub-dataset ([`MOSAIC_TILES`]) and per
//! collection ([`GALLERY_SLIDES`]), so the report of a 30,000-slide corpus
//! shows a few hundred pictures, not 30,000.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::recipe::{Field, Kind, Scale};
use crate::store::overview::{spread, FolderCount, SlideRow};
use crate::store::{State, StateError};
use crate::workspace::Workspace;

use super::collections::{collections, Collection};
use super::model::*;
use super::published::{self, sheet_of};

/// Sample tiles shown per sub-dataset.
pub const MOSAIC_TILES: usize = 8;
/// Slides (QC pictures) shown per WSI collection.
pub const GALLERY_SLIDES: usize = 8;
/// Failures listed per collection.
pub const FAILURES_SHOWN: u64 = 20;
/// Slides with a fallback MPP listed per collection.
pub const MPP_FALLBACKS_SHOWN: usize = 20;
/// Values per breakdown chart before the rest are summed as `other`.
pub const BARS: usize = 14;

/// How much to gather.
#[derive(Clone, Copy, Debug, Default)]
pub struct Detail {
    /// Sample tiles and slide galleries (the HTML and Markdown reports).
    pub samples: bool,
}

/// Outputs made with other library versions, with what differs from the
/// versions this cpia records for the collection's kind.
fn other_libraries(found: &[(String, String, u64)], cols: &[Collection]) -> Vec<OtherLibraries> {
    found
        .iter()
        .map(|(collection, recorded, outputs)| {
            let kind = cols
                .iter()
                .find(|c| c.meta.name == *collection)
                .map_or(Kind::Roi, |c| c.meta.kind);
            let now = crate::plan::libraries::of_kind(kind);
            OtherLibraries {
                collection: collection.clone(),
                outputs: *outputs,
                libraries: (!recorded.is_empty()).then(|| recorded.clone()),
                differences: crate::plan::libraries::differences(recorded, now),
            }
        })
        .collect()
}

/// The report of `ws` from `state` (None: nothing has been built yet).
pub fn gather(ws: &Workspace, state: Option<&State>, detail: Detail) -> Result<Report, StateError> {
    let cols = collections(ws);
    let facts = match state {
        Some(s) => Facts::read(s, &cols.list)?,
        None => Facts::default(),
    };
    let table = published::rows();
    let by_name: HashMap<&str, &published::Row> =
        table.iter().map(|r| (r.sub_dataset.as_str(), r)).collect();

    let mut reports = Vec::new();
    for c in &cols.list {
        let mut r = collection_report(c, &facts, &by_name);
        if let (true, Some(s)) = (detail.samples, state) {
            add_samples(s, &mut r)?;
        }
        reports.push(r);
    }

    let known: BTreeSet<&str> = cols.list.iter().map(|c| c.meta.name.as_str()).collect();
    let claimed: BTreeSet<&str> = reports
        .iter()
        .flat_map(|r| r.sub_datasets.iter().map(|s| s.name.as_str()))
        .collect();
    let unclaimed = table
        .iter()
        .filter(|r| !claimed.contains(r.sub_dataset.as_str()))
        .map(|r| PublishedOnly {
            sheet: r.sheet.clone(),
            sub_dataset: r.sub_dataset.clone(),
            original_name: r.original_name.clone(),
            images: r.images,
        })
        .collect();
    let mut orphan_images: BTreeMap<&str, u64> = BTreeMap::new();
    for f in facts
        .folders
        .iter()
        .filter(|f| !known.contains(f.collection.as_str()))
    {
        if image_scale(&f.path).is_some() {
            *orphan_images.entry(f.collection.as_str()).or_default() += f.files;
        }
    }
    let orphans = orphan_images
        .into_iter()
        .map(|(c, images)| Orphan {
            collection: c.to_string(),
            images,
        })
        .collect();

    let (sheets, scales) = totals(&facts.folders, &table);
    let summary = summary(&reports, &table);
    Ok(Report {
        tool_version: crate::plan::TOOL_VERSION.to_string(),
        generated_at: crate::store::state::now(),
        workspace: ws.root.display().to_string(),
        output: ws.output.display().to_string(),
        last_build: facts.last_build.map(|b| Build {
            id: b.id,
            started: b.started,
            finished: b.finished,
            built: b.built,
            up_to_date: b.up_to_date,
            removed: b.removed,
            failed: b.failed,
        }),
        summary,
        sheets,
        scales,
        breakdowns: breakdowns(&cols.list, &reports),
        collections: reports,
        unclaimed,
        orphans,
        exports: match state {
            Some(s) => exports(s)?,
            None => Vec::new(),
        },
        problems: cols
            .problems
            .into_iter()
            .map(|(recipe, error)| RecipeProblem { recipe, error })
            .collect(),
        other_libraries: other_libraries(&facts.other_libraries, &cols.list),
    })
}

/// What the state says, aggregated.
#[derive(Default)]
struct Facts {
    folders: Vec<FolderCount>,
    /// collection → (fingerprint or None, inputs)
    inputs: HashMap<String, Vec<(Option<String>, u64)>>,
    /// collection → (failed inputs, failure records)
    failure_counts: HashMap<String, (u64, u64)>,
    failures: HashMap<String, Vec<FailureItem>>,
    /// collection → (slide, origin, mpp)
    reads: HashMap<String, Vec<(String, String, f64)>>,
    last_build: Option<crate::store::overview::BuildRow>,
    /// (collection, recorded library versions, outputs) of outputs made
    /// with other versions than this cpia's.
    other_libraries: Vec<(String, String, u64)>,
}

impl Facts {
    fn read(s: &State, cols: &[Collection]) -> Result<Facts, StateError> {
        let current = [
            crate::plan::libraries::of_kind(Kind::Roi),
            crate::plan::libraries::of_kind(Kind::Wsi),
        ];
        let mut f = Facts {
            folders: s.folder_counts()?,
            last_build: s.last_build()?,
            other_libraries: s.outputs_by_other_libraries(&current)?,
            ..Facts::default()
        };
        for c in s.input_counts()? {
            f.inputs
                .entry(c.collection)
                .or_default()
                .push((c.fingerprint, c.inputs));
        }
        for (c, inputs, records) in s.failure_counts()? {
            f.failure_counts.insert(c, (inputs, records));
        }
        for r in s.failures_listed(FAILURES_SHOWN)? {
            f.failures
                .entry(r.collection)
                .or_default()
                .push(FailureItem {
                    input: r.input,
                    unit: r.unit,
                    error: r.error,
                });
        }
        let wsi: Vec<String> = cols
            .iter()
            .filter(|c| c.meta.kind == Kind::Wsi && f.inputs.contains_key(&c.meta.name))
            .map(|c| c.meta.name.clone())
            .collect();
        for r in s.slide_reads(&wsi)? {
            f.reads
                .entry(r.collection)
                .or_default()
                .push((r.slide, r.origin, r.mpp));
        }
        Ok(f)
    }
}

/// The scale of an image folder (`M/BreaKHis_100x` → M); None for `qc/…`.
fn image_scale(path: &str) -> Option<Scale> {
    let (scale, sub) = path.split_once('/')?;
    if sub.is_empty() {
        return None;
    }
    Scale::parse(scale).filter(|s| s.dir() == scale)
}

fn collection_report(
    c: &Collection,
    facts: &Facts,
    published: &HashMap<&str, &published::Row>,
) -> CollectionReport {
    let name = c.meta.name.as_str();
    let built = built_sub_datasets(c, facts);
    let mut rows = built.rows;
    let published_total = add_published(&mut rows, published);
    let (inputs, complete) = input_counts(c, facts);
    let (failed_inputs, records) = facts.failure_counts.get(name).copied().unwrap_or((0, 0));
    let failures = Failures {
        inputs: failed_inputs,
        records,
        shown: facts.failures.get(name).cloned().unwrap_or_default(),
    };
    let (mpp, mpp_fallbacks) = mpp_origins(facts, name);
    let status = match &c.source {
        Err(e) if !e.is_unavailable() => "source unusable",
        Err(_) if built.images > 0 => "source missing",
        Err(_) => "not available",
        Ok(_) if failed_inputs > 0 => "failures",
        Ok(_) if inputs == 0 => "not built",
        Ok(_) if complete == inputs => "complete",
        Ok(_) => "incomplete",
    };
    let m = &c.meta;
    CollectionReport {
        name: m.name.clone(),
        kind: match m.kind {
            Kind::Roi => "roi",
            Kind::Wsi => "wsi",
        }
        .into(),
        recipe: c.recipe.clone(),
        organs: m.organs.clone(),
        diseases: m.diseases.clone(),
        stain: m.stain.clone(),
        field: m.field.map(|f| field_name(f).to_string()),
        year: m.year,
        licence: m.licence.clone(),
        citation: m.citation.clone(),
        url: m.url.clone(),
        source: Source {
            root: c.source_root.clone(),
            available: c.source.is_ok(),
            reason: c.source.as_ref().err().map(|e| e.to_string()),
        },
        status: status.into(),
        inputs,
        complete,
        images: built.images,
        qc_pictures: built.qc_pictures,
        published: published_total,
        sub_datasets: rows,
        failures,
        mpp,
        mpp_fallbacks,
        slides: None,
    }
}

/// What a collection built, by sub-dataset, from its output folders.
struct Built {
    /// The recipe's exact sub-datasets, then any other built, then (while
    /// nothing unexpected is built) the patterns of input-dependent routes.
    rows: Vec<SubDatasetReport>,
    images: u64,
    qc_pictures: u64,
}

/// A collection's sub-dataset rows with the images built in each.
fn built_sub_datasets(c: &Collection, facts: &Facts) -> Built {
    let name = c.meta.name.as_str();
    let row = |sub: &str, scale: Scale, exact: bool| SubDatasetReport {
        name: sub.to_string(),
        scale: scale.dir().to_string(),
        sheet: sheet_of(scale).to_string(),
        exact,
        built: 0,
        published: None,
        published_sheet: None,
        difference: None,
        samples: Vec::new(),
    };
    let mut built = Built {
        rows: Vec::new(),
        images: 0,
        qc_pictures: 0,
    };
    for sd in c.sub_datasets.iter().filter(|s| s.exact) {
        built.rows.push(row(&sd.name, sd.scale, true));
    }
    let mut unexpected = false;
    for f in facts.folders.iter().filter(|f| f.collection == name) {
        let Some(scale) = image_scale(&f.path) else {
            built.qc_pictures += f.files;
            continue;
        };
        built.images += f.files;
        let sub = &f.path[scale.dir().len() + 1..];
        match built
            .rows
            .iter_mut()
            .find(|r| r.name == sub && r.scale == scale.dir())
        {
            Some(r) => r.built += f.files,
            None => {
                unexpected = true;
                let mut r = row(sub, scale, true);
                r.built = f.files;
                built.rows.push(r);
            }
        }
    }
    // A route whose sub-datasets depend on the inputs is shown as its pattern
    // until something is built.
    if !unexpected {
        for sd in c.sub_datasets.iter().filter(|s| !s.exact) {
            built.rows.push(row(&sd.name, sd.scale, false));
        }
    }
    built
}

/// The published counts beside the built ones (exact sub-datasets only);
/// the published total, if any row has one.
fn add_published(
    rows: &mut [SubDatasetReport],
    published: &HashMap<&str, &published::Row>,
) -> Option<u64> {
    let mut published_total = None;
    for r in rows {
        if let Some(p) = published.get(r.name.as_str()).filter(|_| r.exact) {
            r.published = Some(p.images);
            r.difference = Some(r.built as i64 - p.images as i64);
            if p.sheet != r.sheet {
                r.published_sheet = Some(p.sheet.clone());
            }
            *published_total.get_or_insert(0) += p.images;
        }
    }
    published_total
}

/// A collection's recorded inputs, and those complete under its current
/// plan fingerprint.
fn input_counts(c: &Collection, facts: &Facts) -> (u64, u64) {
    let counts = facts
        .inputs
        .get(c.meta.name.as_str())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let inputs: u64 = counts.iter().map(|(_, n)| n).sum();
    let complete: u64 = counts
        .iter()
        .filter(|(fp, _)| fp.as_deref() == Some(c.fingerprint.as_str()))
        .map(|(_, n)| n)
        .sum();
    (inputs, complete)
}

/// Where a collection's slides got their MPP (slides per origin), and the
/// first slides whose MPP is not OpenSlide's.
fn mpp_origins(facts: &Facts, name: &str) -> (Vec<OriginCount>, Vec<SlideMpp>) {
    let reads = facts.reads.get(name).map(Vec::as_slice).unwrap_or(&[]);
    let mut origins: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, origin, _) in reads {
        *origins.entry(origin.as_str()).or_default() += 1;
    }
    let fallbacks = reads
        .iter()
        .filter(|(_, o, _)| o != "openslide")
        .take(MPP_FALLBACKS_SHOWN)
        .map(|(slide, origin, mpp)| SlideMpp {
            slide: slide.clone(),
            origin: origin.clone(),
            mpp: *mpp,
        })
        .collect();
    let origins = origins
        .into_iter()
        .map(|(o, n)| OriginCount {
            origin: o.to_string(),
            slides: n,
        })
        .collect();
    (origins, fallbacks)
}

fn field_name(f: Field) -> &'static str {
    match f {
        Field::Histo => "histo",
        Field::Cyto => "cyto",
    }
}

/// Mosaics of sample images per built sub-dataset and, for WSI, a gallery of
/// slides with their QC pictures: bounded queries only.
fn add_samples(s: &State, r: &mut CollectionReport) -> Result<(), StateError> {
    if r.images == 0 && r.qc_pictures == 0 {
        return Ok(());
    }
    let slides: Vec<SlideRow> = if r.kind == "wsi" {
        s.slides_of(&r.name)?
    } else {
        Vec::new()
    };
    for sd in r.sub_datasets.iter_mut().filter(|sd| sd.built > 0) {
        let folder = format!("{}/{}", sd.scale, sd.name);
        let paths = if r.kind == "wsi" {
            wsi_samples(s, &slides, &folder)?
        } else {
            s.outputs_in_folder(&folder, sd.built, MOSAIC_TILES)?
        };
        sd.samples = paths.into_iter().map(thumb).collect();
    }
    if r.kind == "wsi" && !slides.is_empty() {
        let mut shown = Vec::new();
        for slide in spread(&slides, GALLERY_SLIDES) {
            let cells = s.slide_cells(slide.input)?;
            shown.push(SlideView {
                slide: slide.rel.clone(),
                cells: cells.cells,
                kept: cells.kept,
                tiles: cells.tiles,
                qc: slide.qc.clone().map(thumb),
            });
        }
        r.slides = Some(Gallery {
            total: slides.len() as u64,
            folder: format!("qc/{}", r.name),
            shown,
        });
    }
    Ok(())
}

/// Up to [`MOSAIC_TILES`] tiles of a WSI folder, from slides spread over the
/// collection (several per slide when there are few slides).
fn wsi_samples(s: &State, slides: &[SlideRow], folder: &str) -> Result<Vec<String>, StateError> {
    let picked: Vec<&SlideRow> = spread(slides, MOSAIC_TILES).collect();
    let per = MOSAIC_TILES.div_ceil(picked.len().max(1));
    let mut out = Vec::new();
    for slide in &picked {
        out.extend(s.tiles_of_slide(slide.input, folder, per)?);
        if out.len() >= MOSAIC_TILES {
            break;
        }
    }
    // Slides without tissue gave nothing: ask the picked slides for more.
    if out.len() < MOSAIC_TILES && per < MOSAIC_TILES {
        for slide in &picked {
            for t in s.tiles_of_slide(slide.input, folder, MOSAIC_TILES)? {
                if out.len() < MOSAIC_TILES && !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    out.truncate(MOSAIC_TILES);
    Ok(out)
}

fn thumb(path: String) -> Thumb {
    Thumb { path, data: None }
}

/// Images per sheet and per scale folder, built (every image folder of the
/// state) and published.
fn totals(folders: &[FolderCount], table: &[published::Row]) -> (Vec<SheetTotal>, Vec<ScaleTotal>) {
    let mut per_scale: BTreeMap<Scale, (u64, u64)> = BTreeMap::new();
    for f in folders {
        if let Some(scale) = image_scale(&f.path) {
            let e = per_scale.entry(scale).or_default();
            e.0 += f.files;
            e.1 += 1;
        }
    }
    let scales = [Scale::XL, Scale::L, Scale::M, Scale::S];
    let sheets = published::SHEETS
        .iter()
        .map(|&sheet| {
            let on: Vec<Scale> = scales
                .iter()
                .copied()
                .filter(|s| sheet_of(*s) == sheet)
                .collect();
            let built: u64 = on.iter().map(|s| per_scale.get(s).map_or(0, |e| e.0)).sum();
            let published: u64 = table
                .iter()
                .filter(|r| r.sheet == sheet)
                .map(|r| r.images)
                .sum();
            SheetTotal {
                sheet: sheet.to_string(),
                scales: on.iter().map(|s| s.dir().to_string()).collect(),
                built,
                published,
                difference: built as i64 - published as i64,
            }
        })
        .collect();
    let scales = scales
        .iter()
        .map(|s| {
            let (images, sub_datasets) = per_scale.get(s).copied().unwrap_or_default();
            ScaleTotal {
                scale: s.dir().to_string(),
                images,
                sub_datasets,
            }
        })
        .collect();
    (sheets, scales)
}

fn summary(reports: &[CollectionReport], table: &[published::Row]) -> Summary {
    let mut s = Summary {
        published_images: table.iter().map(|r| r.images).sum(),
        ..Summary::default()
    };
    for r in reports {
        s.collections += 1;
        match r.kind.as_str() {
            "wsi" => {
                s.wsi_collections += 1;
                s.slides += r.inputs;
            }
            _ => s.roi_collections += 1,
        }
        match (r.source.available, r.status.as_str()) {
            (true, _) => s.sources_available += 1,
            (false, "source unusable") => s.sources_unusable += 1,
            (false, _) => s.sources_not_available += 1,
        }
        s.collections_built += u64::from(r.images > 0);
        s.images += r.images;
        s.qc_pictures += r.qc_pictures;
        s.inputs += r.inputs;
        s.inputs_complete += r.complete;
        s.failed_inputs += r.failures.inputs;
        s.collections_with_failures += u64::from(r.failures.inputs > 0);
        s.mpp_fallback_slides += r
            .mpp
            .iter()
            .filter(|o| o.origin != "openslide")
            .map(|o| o.slides)
            .sum::<u64>();
    }
    s
}

/// Images (built and published) per organ, disease, stain and field; the
/// largest [`BARS`] values, the rest summed as `other`.
fn breakdowns(cols: &[Collection], reports: &[CollectionReport]) -> Vec<Breakdown> {
    type Values = fn(&Collection) -> Vec<String>;
    let fields: [(&str, Values); 4] = [
        ("organ", |c| c.meta.organs.clone()),
        ("disease", |c| c.meta.diseases.clone()),
        ("stain", |c| c.meta.stain.iter().cloned().collect()),
        ("field", |c| {
            c.meta
                .field
                .iter()
                .map(|f| field_name(*f).to_string())
                .collect()
        }),
    ];
    fields
        .iter()
        .map(|(by, values)| {
            let mut bars: BTreeMap<String, Bar> = BTreeMap::new();
            for (c, r) in cols.iter().zip(reports) {
                let mut vs = values(c);
                if vs.is_empty() {
                    vs.push("unknown".into());
                }
                vs.sort();
                vs.dedup();
                for v in vs {
                    let b = bars.entry(v.clone()).or_insert_with(|| Bar {
                        label: v,
                        collections: 0,
                        built: 0,
                        published: 0,
                    });
                    b.collections += 1;
                    b.built += r.images;
                    b.published += r.published.unwrap_or(0);
                }
            }
            let mut bars: Vec<Bar> = bars.into_values().collect();
            bars.sort_by(|a, b| {
                (b.published.max(b.built), &a.label).cmp(&(a.published.max(a.built), &b.label))
            });
            if bars.len() > BARS {
                let rest = bars.split_off(BARS - 1);
                bars.push(Bar {
                    label: format!("other ({} values)", rest.len()),
                    collections: rest.iter().map(|b| b.collections).sum(),
                    built: rest.iter().map(|b| b.built).sum(),
                    published: rest.iter().map(|b| b.published).sum(),
                });
            }
            Breakdown {
                by: by.to_string(),
                bars,
            }
        })
        .collect()
}

/// The exports recorded in the state, with what they have not written yet.
fn exports(state: &State) -> Result<Vec<super::model::ExportReport>, StateError> {
    let mut out = Vec::new();
    for e in state.exports()? {
        out.push(super::model::ExportReport {
            pending: state.export_pending(e.id)? + state.export_stale(e.id)?.len() as u64,
            name: e.name,
            format: e.format,
            declared: e.declared,
            shards: e.shards,
            samples: e.samples,
            bytes: e.bytes,
            updated_at: e.updated_at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_folders_have_a_scale_and_qc_folders_do_not() {
        assert_eq!(image_scale("M/BreaKHis_100x"), Some(Scale::M));
        assert_eq!(image_scale("XL/CAM16-3840"), Some(Scale::XL));
        assert_eq!(image_scale("qc/CAM16"), None);
        assert_eq!(image_scale("m/x"), None);
        assert_eq!(image_scale("M/"), None);
        assert_eq!(image_scale("M"), None);
    }

    /// Every published sub-dataset is written by exactly one catalog recipe,
    /// at a scale on the sheet the paper lists it on: what a report compares
    /// row by row.
    #[test]
    fn every_published_sub_dataset_has_one_catalog_recipe_on_its_sheet() {
        let mut writers: HashMap<String, Vec<(String, Scale)>> = HashMap::new();
        for (rel, _) in crate::catalog::recipes() {
            let recipe = crate::catalog::load(rel).unwrap_or_else(|d| panic!("{rel}: {d}"));
            let spec = crate::plan::CollectionSpec::new(std::sync::Arc::new(recipe));
            for sd in spec.sub_datasets() {
                assert!(sd.exact, "{rel}: {} is a pattern", sd.name);
                writers
                    .entry(sd.name)
                    .or_default()
                    .push((rel.to_string(), sd.scale));
            }
        }
        for row in published::rows() {
            let w = writers.get(&row.sub_dataset).cloned().unwrap_or_default();
            assert_eq!(w.len(), 1, "{}: written by {w:?}", row.sub_dataset);
            assert_eq!(sheet_of(w[0].1), row.sheet, "{}", row.sub_dataset);
        }
    }
}
