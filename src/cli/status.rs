//! `cpia status`: the report's summary for a terminal — sources, what is
//! built and complete, failures, MPP fallbacks, images per published sheet,
//! and the collections that have a source or outputs. Reads the state only
//! (no source walk: `cpia plan` says what a build would change).

use serde::Serialize;

use crate::report::model::{Build, OtherLibraries, Report, SheetTotal, Summary};
use crate::report::text;

use super::{CmdResult, Context};

/// Arguments of `cpia status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Json<'a> {
    workspace: &'a str,
    output: &'a str,
    last_build: &'a Option<Build>,
    summary: &'a Summary,
    sheets: &'a [SheetTotal],
    collections: Vec<JsonCollection<'a>>,
    problems: Vec<JsonProblem<'a>>,
    exports: &'a [crate::report::model::ExportReport],
    other_libraries: &'a [OtherLibraries],
}

#[derive(Serialize)]
struct JsonCollection<'a> {
    #[serde(flatten)]
    collection: super::CollectionJson<'a>,
    status: &'a str,
    inputs: u64,
    complete: u64,
    images: u64,
    qc_pictures: u64,
    published: Option<u64>,
    failed_inputs: u64,
    mpp_fallback_slides: u64,
}

#[derive(Serialize)]
struct JsonProblem<'a> {
    recipe: &'a str,
    error: &'a str,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    super::print_report(ctx, args.json, json, text::status)
}

/// The JSON of `cpia status`.
fn json(report: &Report) -> serde_json::Result<String> {
    serde_json::to_string(&Json {
        workspace: &report.workspace,
        output: &report.output,
        last_build: &report.last_build,
        summary: &report.summary,
        sheets: &report.sheets,
        collections: report
            .collections
            .iter()
            .map(|c| JsonCollection {
                collection: super::CollectionJson::of(c),
                status: &c.status,
                inputs: c.inputs,
                complete: c.complete,
                images: c.images,
                qc_pictures: c.qc_pictures,
                published: c.published,
                failed_inputs: c.failures.inputs,
                mpp_fallback_slides: c
                    .mpp
                    .iter()
                    .filter(|o| o.origin != "openslide")
                    .map(|o| o.slides)
                    .sum(),
            })
            .collect(),
        problems: report
            .problems
            .iter()
            .map(|p| JsonProblem {
                recipe: &p.recipe,
                error: &p.error,
            })
            .collect(),
        exports: &report.exports,
        other_libraries: &report.other_libraries,
    })
}
