//! What provenance and audit read and keep in the state (issue 10), one
//! concept per file: every output with what made it, streamed
//! ([`output_facts`]); the build history and the recipe archive ([`history`]); the
//! bookkeeping of the manifests in the dataset ([`manifests`]).

pub mod history;
pub mod manifests;
pub mod output_facts;

pub use output_facts::{FailureFacts, OutputFacts, OutputFilter, TileFacts};
