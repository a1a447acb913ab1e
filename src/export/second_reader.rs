//! Evaluating a page of pairs on two threads: the update's own connection to
//! the state, and a second, read-only connection on a thread of its own.
//!
//! Evaluating a pair is reading its outputs' facts from the state and making
//! each sample's key, record and digest ([`super::evaluate`]). An SQLite
//! connection serves one thread, so a whole export's evaluation ran on one
//! core while the other waited for the shards to write: on 20,000 samples,
//! 0.27 s of a 1.1 s export. Here both threads take the page's pairs in turn
//! from one counter (pairs differ by a thousandfold in samples: a slide's
//! tiles against one ROI image), each with its own [`Evaluator`], and the
//! results are put back in page order, so what is recorded is the same as
//! one thread's. The second connection reads only what the build recorded
//! before the update began (outputs, tiles, pipelines, slides); what the
//! update itself writes (the export's own samples) is read on the update's
//! connection and handed over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use super::evaluate::{Evaluated, Evaluator};
use super::webdataset::Member;
use super::Error;
use crate::store::exports::{Item, SampleRow};
use crate::store::State;

/// One page's pairs, their recorded samples, and the counter both threads
/// take pairs from.
pub struct Page {
    pairs: Vec<(i64, i64)>,
    old: Vec<Vec<SampleRow>>,
    next: AtomicUsize,
}

/// Evaluated pairs by their place in the page.
type Done = Result<Vec<(usize, Evaluated)>, Error>;

impl Page {
    pub fn new(pairs: Vec<(i64, i64)>, old: Vec<Vec<SampleRow>>) -> Arc<Page> {
        Arc::new(Page {
            pairs,
            old,
            next: AtomicUsize::new(0),
        })
    }

    /// Evaluates pairs of the page until none is left untaken.
    fn take_and_evaluate(&self, state: &State, ev: &mut Evaluator<'_>) -> Done {
        let mut done = Vec::new();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let (Some(&(out_dir, input)), Some(old)) = (self.pairs.get(i), self.old.get(i)) else {
                return Ok(done);
            };
            done.push((i, ev.evaluate(state, out_dir, input, old)?));
        }
    }
}

/// The second thread: pages in, its share of each page out.
pub struct SecondReader {
    pages: mpsc::Sender<Arc<Page>>,
    done: mpsc::Receiver<Done>,
}

impl SecondReader {
    /// Starts the second thread in `scope`, evaluating with `ev` on `state`
    /// (a read-only connection); it ends, handing back the members its
    /// evaluator kept, when the reader is dropped.
    pub fn start<'scope, 'env: 'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        state: State,
        mut ev: Evaluator<'env>,
    ) -> (
        SecondReader,
        std::thread::ScopedJoinHandle<'scope, std::collections::HashMap<Item, Member>>,
    ) {
        let (pages, page_rx) = mpsc::channel::<Arc<Page>>();
        let (done_tx, done) = mpsc::channel();
        let handle = scope.spawn(move || {
            for page in page_rx {
                if done_tx
                    .send(page.take_and_evaluate(&state, &mut ev))
                    .is_err()
                {
                    break;
                }
            }
            ev.into_kept()
        });
        (SecondReader { pages, done }, handle)
    }

    /// Evaluates `page` on both threads: every pair's result, in page order.
    pub fn evaluate(
        &self,
        page: Arc<Page>,
        state: &State,
        ev: &mut Evaluator<'_>,
    ) -> Result<Vec<Evaluated>, Error> {
        let shared = self.pages.send(page.clone()).is_ok();
        let mut done = page.take_and_evaluate(state, ev)?;
        if shared {
            let theirs = self
                .done
                .recv()
                .map_err(|_| Error::Other("the second evaluating thread stopped".into()))?;
            done.extend(theirs?);
        }
        done.sort_by_key(|(i, _)| *i);
        if done.len() != page.pairs.len() {
            return Err(Error::Other(format!(
                "evaluated {} of a page's {} pairs",
                done.len(),
                page.pairs.len()
            )));
        }
        Ok(done.into_iter().map(|(_, e)| e).collect())
    }
}
