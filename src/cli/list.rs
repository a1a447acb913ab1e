//! `cpia list`: the workspace's collections — kind, sub-datasets with their
//! scales, organs, whether the source is available, images built — as text
//! or, with `--json`, as `{"collections": [...]}`.

use serde::Serialize;

use crate::report::model::Report;
use crate::report::text;

use super::{CmdResult, Context};

/// Arguments of `cpia list`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print `{"collections": [...]}` on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Json<'a> {
    collections: Vec<JsonCollection<'a>>,
}

#[derive(Serialize)]
struct JsonCollection<'a> {
    #[serde(flatten)]
    collection: super::CollectionJson<'a>,
    sub_datasets: Vec<JsonSubDataset<'a>>,
    organs: &'a [String],
    /// Images built (all scales; QC pictures not counted).
    outputs: u64,
}

#[derive(Serialize)]
struct JsonSubDataset<'a> {
    name: &'a str,
    scale: &'a str,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    super::print_report(ctx, args.json, json, text::list)
}

/// The JSON of `cpia list`.
fn json(report: &Report) -> serde_json::Result<String> {
    serde_json::to_string(&Json {
        collections: report
            .collections
            .iter()
            .map(|c| JsonCollection {
                collection: super::CollectionJson::of(c),
                sub_datasets: c
                    .sub_datasets
                    .iter()
                    .map(|s| JsonSubDataset {
                        name: &s.name,
                        scale: &s.scale,
                    })
                    .collect(),
                organs: &c.organs,
                outputs: c.images,
            })
            .collect(),
    })
}
