//! Provenance and audit, on top of the build state: why an output exists
//! ([`why`]), whether the dataset still matches its record ([`verify`]), the
//! build history ([`log`]), auditors' questions ([`query`]), W3C PROV-JSON
//! ([`lineage`]), the recipe texts a build used ([`archive`]) and the
//! manifests kept in the dataset ([`manifest`], written with
//! [`crate::parquet_file`]).
//!
//! It reads the state through [`crate::store`] and recomputes keys with
//! [`crate::plan::key`]; everything that can be large is streamed from a
//! SQLite cursor, so memory does not grow with the number of outputs.
//! The build calls it twice (`engine::driver`): to archive the recipes it
//! uses, and to bring the manifests up to date after its work.

pub mod archive;
pub mod facts;
pub mod lineage;
pub mod log;
pub mod manifest;
pub mod query;
pub mod verify;
pub mod why;

use crate::store::StateError;

/// A failure of a provenance command: the state, or I/O on its output.
#[derive(Debug)]
pub enum Error {
    State(StateError),
    Io(std::io::Error),
    Other(String),
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Error::State(e)
    }
}
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::State(e) => e.fmt(f),
            Error::Io(e) => write!(f, "writing the output: {e}"),
            Error::Other(s) => f.write_str(s),
        }
    }
}
impl std::error::Error for Error {}

/// Runs `f` on each item of a streaming walk, keeping the first error and
/// stopping the walk at it.
pub(crate) fn stop_at_error<'a, T>(
    err: &'a mut Option<Error>,
    mut f: impl FnMut(T) -> Result<(), Error> + 'a,
) -> impl FnMut(T) -> std::ops::ControlFlow<()> + 'a {
    move |item| match f(item) {
        Ok(()) => std::ops::ControlFlow::Continue(()),
        Err(e) => {
            *err = Some(e);
            std::ops::ControlFlow::Break(())
        }
    }
}
