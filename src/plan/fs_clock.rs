//! The output filesystem's clock, and when a folder's timestamps are too
//! recent to vouch for it (git's "racily clean" rule, [`FsClock::racy`]).
//!
//! A folder's identity (device, inode, mtime, ctime) proves that nothing
//! changed in it only if any later change would move its timestamps. A
//! change in the same tick of the clock that stamped the last one leaves
//! them equal, so an identity vouches only once it is older than that:
//!
//! | where the folder is | its identity vouches once the clock, read by creating a file beside the output folders, shows |
//! |---|---|
//! | on the probe's device, a filesystem whose every change this kernel stamps (ext2/3/4, XFS, Btrfs, tmpfs, F2FS, ZFS, bcachefs, overlayfs) | a time later than its newest timestamp: one clock stamps both, so it has ticked past the folder's last change (≤ one tick: 1–10 ms, usually already past when a build ends) |
//! | anywhere else (NFS, SMB, Lustre, GPFS, CephFS, BeeGFS, FUSE, …, or another device mounted below the output root) | 50 ms after its newest timestamp (2 s when its timestamps are whole seconds): clients' and servers' clocks stamp changes there, and NTP keeps them within ~40 ms of each other |
//!
//! On a local filesystem of a kernel with multigrain timestamps (6.13+), a
//! change after a folder's ctime was read even gets a finer, distinct
//! timestamp; the rule above does not rely on it.

use crate::store::DirIdentity;

/// Filesystems on which every timestamp is stamped by the kernel that
/// mounts them (`statfs(2)`'s `f_type`, linux/magic.h).
const ONE_CLOCK_FILESYSTEMS: [(u32, &str); 8] = [
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "XFS"),
    (0x9123_683E, "Btrfs"),
    (0x0102_1994, "tmpfs"),
    (0xF2F5_2010, "F2FS"),
    (0x2FC1_2FC2, "ZFS"),
    (0xCA45_1A4E, "bcachefs"),
    (0x794C_7630, "overlayfs"),
];

/// Whether the filesystem with this `f_type` has all its changes stamped
/// by this kernel's clock.
pub fn one_clock(f_type: u32) -> bool {
    ONE_CLOCK_FILESYSTEMS.iter().any(|&(t, _)| t == f_type)
}

/// The output filesystem's clock, read once: the mtime of a file just
/// created beside the output folders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsClock {
    /// The probe file's mtime (ns since the epoch).
    pub now_ns: i64,
    /// The probe file's device.
    pub dev: u64,
    /// Whether that filesystem's changes are all stamped by this kernel
    /// ([`one_clock`]).
    pub one_clock: bool,
}

impl FsClock {
    /// Whether `id` could still hide a change made after it was read
    /// (at or after this clock reading).
    pub fn racy(&self, id: &DirIdentity) -> bool {
        self.age(id) < self.window(id)
    }

    /// How much longer `id` stays racy (ns; ≤ 0 once it is not).
    pub fn wait(&self, id: &DirIdentity) -> i64 {
        self.window(id) - self.age(id)
    }

    /// How long to sleep past [`FsClock::wait`] before reading the clock
    /// again: the clock itself is coarse, so a file created now may show
    /// the previous tick (ns).
    pub fn margin(&self) -> i64 {
        if self.one_clock {
            5_000_000
        } else {
            15_000_000
        }
    }

    fn age(&self, id: &DirIdentity) -> i64 {
        self.now_ns - id.mtime_ns.max(id.ctime_ns)
    }

    /// The table in the module doc: one tick of this clock (any later
    /// reading) where it stamps the folder itself, else the shared window.
    fn window(&self, id: &DirIdentity) -> i64 {
        if self.one_clock && id.dev == self.dev {
            1
        } else {
            super::sources::timestamp_window(id.mtime_ns, id.ctime_ns)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(dev: u64, mtime_ns: i64, ctime_ns: i64) -> DirIdentity {
        DirIdentity {
            dev,
            ino: 2,
            mtime_ns,
            ctime_ns,
        }
    }

    #[test]
    fn one_kernel_clock_vouches_once_it_has_ticked_past_the_newest_timestamp() {
        let t = 1_700_000_000_123_456_789;
        let clock = |now_ns| FsClock {
            now_ns,
            dev: 7,
            one_clock: true,
        };
        // Same tick as the folder's last change (its ctime): racy.
        assert!(clock(t).racy(&folder(7, t - 5, t)));
        assert!(clock(t - 1).racy(&folder(7, t, t)));
        // Any later reading of the same clock: not racy.
        assert!(!clock(t + 1).racy(&folder(7, t, t - 9)));
        assert!(clock(t).wait(&folder(7, t, t)) > 0);
        assert!(clock(t + 4_000_000).wait(&folder(7, t, t)) <= 0);
    }

    #[test]
    fn other_clocks_and_other_devices_keep_the_shared_window() {
        let t = 1_700_000_000_123_456_789;
        let nfs = FsClock {
            now_ns: t + 10_000_000,
            dev: 7,
            one_clock: false,
        };
        assert!(nfs.racy(&folder(7, t, t)), "10 ms: within 50 ms");
        assert!(!FsClock {
            now_ns: t + 50_000_000,
            ..nfs
        }
        .racy(&folder(7, t, t)));
        // The newest of the two counts: a ctime newer than the mtime (a
        // chmod, a `touch -d` of the mtime alone).
        assert!(nfs.racy(&folder(7, t - 5_000_000_000, t)));
        // A clock behind the folder's (a server ahead of this one): racy.
        assert!(FsClock {
            now_ns: t - 1_000_000_000,
            ..nfs
        }
        .racy(&folder(7, t, t)));
        // A folder on another device (a mount below the output root) is
        // not stamped by the probe's clock, however local that one is.
        let local = FsClock {
            one_clock: true,
            ..nfs
        };
        assert!(local.racy(&folder(8, t, t)));
        assert!(!local.racy(&folder(7, t, t)));
        // Whole seconds: a filesystem that keeps seconds only, 2 s.
        let s = 1_700_000_000_000_000_000;
        let seconds = FsClock {
            now_ns: s + 1_000_000_000,
            ..nfs
        };
        assert!(seconds.racy(&folder(7, s, s)));
        assert_eq!(seconds.wait(&folder(7, s, s)), 1_000_000_000);
    }

    #[test]
    fn only_filesystems_stamped_by_this_kernel_count_as_one_clock() {
        for local in [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x794C_7630] {
            assert!(one_clock(local), "{local:#x}");
        }
        // NFS, SMB2, FUSE, Lustre, GPFS, CephFS.
        for shared in [
            0x6969,
            0xFE53_4D42,
            0x6573_5546,
            0x0BD0_0BD0,
            0x4750_4653,
            0x00C3_6400,
        ] {
            assert!(!one_clock(shared), "{shared:#x}");
        }
    }
}
