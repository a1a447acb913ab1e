//! Reports on a workspace: what the recipes promise, what the state says was
//! built, and the published CPIA counts, side by side — for `cpia list`,
//! `cpia status` and `cpia report`.
//!
//! One file per concept: [`collections`] (the recipes, their sub-datasets
//! and source roots), [`published`] (the paper's counts, compiled in),
//! [`gather`] (the three put together into a [`model::Report`]), [`thumbs`]
//! (sample images shrunk and embedded), and the renderers: [`html`] (a
//! self-contained page with [`svg`] charts), [`markdown`], [`text`] (the
//! terminal) — JSON is the model serialized.
//!
//! Layer: above `store`, `plan` (to read recipes) and `ops` (to shrink
//! pictures); nothing here writes the state or the dataset. The cost of a
//! report grows with collections, slides and WSI units, never with tiles
//! ([`gather`]'s module documentation).

pub mod collections;
pub mod format;
pub mod gather;
pub mod html;
pub mod markdown;
pub mod model;
pub mod published;
pub mod svg;
pub mod text;
pub mod thumbs;

pub use gather::{gather, Detail};
pub use model::Report;

/// The report of workspace `ws` from its state, if it has one (nothing is
/// created: a workspace never built reports zeros).
pub fn of_workspace(
    ws: &crate::workspace::Workspace,
    detail: Detail,
) -> Result<Report, crate::store::StateError> {
    let state = crate::store::State::open_read_only(&ws.state_path())?;
    gather(ws, state.as_ref(), detail)
}

/// An output format of `cpia report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Html,
    #[value(name = "md")]
    Markdown,
    Json,
}

impl Format {
    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Markdown => "md",
            Format::Json => "json",
        }
    }

    /// The format a file name asks for by its extension.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "html" | "htm" => Some(Format::Html),
            "md" | "markdown" => Some(Format::Markdown),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// `r` in `format`; `link` is the prefix from the report's folder to the
/// output folder, for links to the dataset's files.
pub fn render(r: &Report, format: Format, link: &str) -> String {
    match format {
        Format::Html => html::render(r, link),
        Format::Markdown => markdown::render(r, link),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(r)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            s.push('\n');
            s
        }
    }
}
