//! What provenance and audit read and keep in the state (issue 10), one
//! concept per file: every output with what made it, streamed
//! ([`facts`]); the build history and the recipe archive ([`archive`]); the
//! bookkeeping of the manifests in the dataset ([`manifests`]).

pub mod archive;
pub mod facts;
pub mod manifests;

pub use facts::{FailureFacts, OutputFacts, OutputFilter, TileFacts};
