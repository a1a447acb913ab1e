//! The output filesystem's clock, read by creating a file beside the output
//! folders: what `plan::fs_clock` compares folder timestamps with, so that
//! a folder's identity vouches for it only once no change can hide in it.

use std::io;

use super::confined::Dir;
use crate::plan::fs_clock::{self, FsClock};

/// Reads the clock of `tmp`'s filesystem by creating (and removing) file
/// `name` there (`OutputDir::fs_now`).
pub(super) fn probe(tmp: &Dir, name: &str) -> io::Result<FsClock> {
    tmp.create_file(name)?;
    let st = tmp.stat(name);
    let _ = tmp.unlink(name, false);
    let st = st?;
    Ok(FsClock {
        now_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        dev: st.st_dev,
        one_clock: tmp.filesystem_type().is_ok_and(fs_clock::one_clock),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The assumption `plan::fs_clock` makes of the filesystem the tests run
    /// on: once a reading of its clock is past a folder's timestamps, every
    /// later change stamps the folder later. Checked on a folder's identity
    /// (`plan::outdirs::identity`, what a build records), a file added as
    /// soon as the rule lets the identity after the one before vouch. On a kernel with multigrain
    /// timestamps (6.13+) changes are stamped apart even within a tick, so
    /// there this holds whatever the rule (checked: a rule that never waits
    /// passes too); on older kernels, whose stamps are the coarse clock's,
    /// it is what the rule guarantees. The rule itself is tested in
    /// `plan::fs_clock`.
    #[test]
    fn once_the_clock_reads_past_a_change_later_changes_are_stamped_later() {
        use crate::plan::outdirs::identity;
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path().join("ds");
        std::fs::create_dir(&ds).unwrap();
        let tmp = Dir::root(dir.path()).unwrap();
        let mut waited = 0;
        for k in 0..200 {
            std::fs::write(ds.join(format!("{k}")), b"x").unwrap();
            let mut probes = 0;
            let vouching = loop {
                let clock = probe(&tmp, "clock.now").unwrap();
                let id = identity(&ds).unwrap();
                if !clock.racy(&id) {
                    break id;
                }
                waited += 1;
                probes += 1;
                // A tick is 1-10 ms; a shared filesystem's window 2 s.
                assert!(
                    probes < 100_000,
                    "change {k}: the clock never moved past it"
                );
            };
            std::fs::write(ds.join(format!("{k}.next")), b"x").unwrap();
            let next = identity(&ds).unwrap();
            assert!(
                next.ctime_ns > vouching.mtime_ns.max(vouching.ctime_ns),
                "change {k} left the folder stamped as the clock had passed it"
            );
        }
        // The clock was read in the tick of a change at least sometimes:
        // the rule was exercised, not only passed by slow iterations.
        assert!(waited > 0, "no reading was ever racy");
    }
}
