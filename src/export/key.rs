//! Sample keys and their placement: the one place both are computed.
//!
//! | what | rule |
//! |---|---|
//! | key | the output's path without `.jpg`, `<scale>/<sub-dataset>/<stem>`, each component escaped |
//! | escaping | RFC 3986 percent-encoding of the UTF-8 bytes, keeping `A–Z a–z 0–9 - _ ~` and encoding everything else — `.` too (`%2E`), so a key has no dot, and `%` (`%25`), so escaping is injective: two names never share a key |
//! | long names | a member name must fit ustar (name ≤ 100 bytes, prefix ≤ 155): an escaped component longer than its room becomes its first bytes, `%-` (which escaping never writes) and 16 hex digits of the blake3 of the whole component |
//! | shard | `u64(blake3("cpia shard" ‖ key)[0..8]) mod shards`: the key alone, so a sample never moves unless the shard count changes |
//! | order within a shard | by `u64(blake3("cpia order" ‖ key)[0..8])`, then key: a stable pseudo-random order, the same whatever else is in the shard |
//!
//! WebDataset splits a member name at the first dot of its base name
//! (`<key>.jpg`, `<key>.json`), and `wids` the same way; keys are tested
//! with both readers (tests/export.rs).

/// Bump when keys, placement or order change: every export is rewritten.
pub const VERSION: &str = "1";

/// Room for the last component: ustar's 100-byte name minus `.json`.
const NAME_ROOM: usize = 95;
/// Room for `<scale>/<sub-dataset>` in ustar's 155-byte prefix.
const PREFIX_ROOM: usize = 155;

/// Percent-encodes one path component (see the module table).
pub fn escape(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    for &b in component.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `escape(component)`, shortened to `room` bytes when longer.
fn escape_within(component: &str, room: usize) -> String {
    let e = escape(component);
    if e.len() <= room {
        return e;
    }
    let hash = blake3::hash(component.as_bytes()).to_hex();
    let mut keep = room - 18;
    // Never cut inside an escape (`%XX`).
    while keep > 0 && e.as_bytes()[keep - 1] == b'%' || keep > 1 && e.as_bytes()[keep - 2] == b'%' {
        keep -= 1;
    }
    format!("{}%-{}", &e[..keep], &hash[..16])
}

/// The key of the output `dir`/`name` (`dir` = `<scale>/<sub-dataset>`).
pub fn key(dir: &str, name: &str) -> String {
    let stem = name.strip_suffix(".jpg").unwrap_or(name);
    let (scale, sub) = dir.split_once('/').unwrap_or((dir, ""));
    let scale = escape(scale);
    let sub = escape_within(sub, PREFIX_ROOM - scale.len() - 1);
    format!("{scale}/{sub}/{}", escape_within(stem, NAME_ROOM))
}

fn hash64(domain: &str, key: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(domain.as_bytes());
    h.update(b"\0");
    h.update(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// The shard of `key` among `shards`.
pub fn shard(key: &str, shards: u64) -> u64 {
    hash64("cpia shard", key) % shards.max(1)
}

/// The order of `key` within its shard.
pub fn rank(key: &str) -> u64 {
    hash64("cpia order", key)
}

/// A shard's file name: `<export>-<NNNNNN>.<ext>`.
pub fn shard_name(export: &str, shard: u64, ext: &str) -> String {
    format!("{export}-{shard:06}.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_no_dot_and_never_collide() {
        let names = [
            "a.b.jpg",
            "a_b.jpg",
            "a%2Eb.jpg",
            "a b.jpg",
            "a_b_.jpg",
            "é.jpg",
            "%C3%A9.jpg",
            "e\u{301}.jpg",
        ];
        let keys: Vec<String> = names.iter().map(|n| key("M/Sub.x", n)).collect();
        for k in &keys {
            assert!(!k.contains('.'), "{k}");
            assert!(k.is_ascii(), "{k}");
        }
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert_eq!(
            key("M/BreaKHis_100x", "SOB_B_A-14.jpg"),
            "M/BreaKHis_100x/SOB_B_A-14"
        );
        assert_eq!(key("M/Sub.x", "a.b.jpg"), "M/Sub%2Ex/a%2Eb");
    }

    #[test]
    fn long_names_fit_ustar_and_stay_distinct() {
        let a = format!("{}a.jpg", "é".repeat(60));
        let b = format!("{}b.jpg", "é".repeat(60));
        let (ka, kb) = (key("S/x", &a), key("S/x", &b));
        assert_ne!(ka, kb);
        let last = ka.rsplit('/').next().unwrap();
        assert!(last.len() <= NAME_ROOM, "{}", last.len());
        assert!(last.contains("%-"));
        let long_sub = "s".repeat(400);
        let k = key(&format!("XL/{long_sub}"), "n.jpg");
        let prefix = k.rsplit_once('/').unwrap().0;
        assert!(prefix.len() <= PREFIX_ROOM, "{}", prefix.len());
    }

    #[test]
    fn placement_is_a_function_of_the_key() {
        assert_eq!(shard("M/a/b", 100), shard("M/a/b", 100));
        let spread: std::collections::HashSet<u64> =
            (0..1000).map(|i| shard(&format!("M/a/{i}"), 10)).collect();
        assert_eq!(spread.len(), 10);
        assert_eq!(shard_name("pretrain", 12, "tar"), "pretrain-000012.tar");
    }
}
