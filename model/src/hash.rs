//! The ring hash: one stable 64-bit hash that placement and master election
//! both rank nodes with.
//!
//! Every node computes placement and election on its own from the gossiped
//! view, so the hash must give the same answer on every machine, build,
//! architecture and Rust version. `std`'s `DefaultHasher` promises none of
//! that (its algorithm and keys may change between releases), so the ring
//! uses XXH3-64 (xxHash 0.8, seed 0) from the `xxhash-rust` crate, whose
//! output is specified by the reference implementation.
//!
//! # Input encoding
//!
//! A hash input is a domain tag followed by fields, and every part,
//! the domain tag included, is written as its length (u64, little-endian)
//! followed by its bytes:
//!
//! ```text
//! input = len(domain) ‖ domain ‖ len(f1) ‖ f1 ‖ … ‖ len(fn) ‖ fn
//! ```
//!
//! The length prefixes make the encoding injective, so `("ab", "c")` and
//! `("a", "bc")` are different inputs; the domain tag keeps a hash computed
//! for one purpose from ever equalling a hash computed for another.
//!
//! # Invariants
//!
//! - [`rendezvous_score`] depends only on the site name and the node name.
//!   Changing the domain tag or the encoding moves every site in a running
//!   cluster and splits decisions between old and new nodes: the pinned
//!   vectors in the tests must break first, and such a change needs a new
//!   domain tag (`…/v2`) and a migration plan.
//! - [`Rank`] is a total order on distinct node names for a given site, so
//!   no decision ever depends on input order, even on a 64-bit collision.

use std::cmp::Ordering;

use xxhash_rust::xxh3::xxh3_64;

use crate::ids::{NodeName, SiteName};

/// The domain tag of the rendezvous score. Versioned because changing the
/// score reshuffles every site (see the module docs).
pub const RENDEZVOUS_DOMAIN: &str = "ringhost/rendezvous/v1";

/// XXH3-64 (seed 0) of `domain` and `fields` in the length-prefixed encoding
/// of the module docs.
pub fn hash_fields(domain: &str, fields: &[&[u8]]) -> u64 {
    let size = 8 + domain.len() + fields.iter().map(|f| 8 + f.len()).sum::<usize>();
    let mut input = Vec::with_capacity(size);
    for part in std::iter::once(domain.as_bytes()).chain(fields.iter().copied()) {
        // usize -> u64 never truncates on the platforms Rust supports (≤ 64-bit).
        input.extend_from_slice(&(part.len() as u64).to_le_bytes());
        input.extend_from_slice(part);
    }
    xxh3_64(&input)
}

/// The rendezvous (highest random weight) score of `node` for `site`:
/// the higher, the more `site` wants `node`.
pub fn rendezvous_score(site: &SiteName, node: &NodeName) -> u64 {
    hash_fields(
        RENDEZVOUS_DOMAIN,
        &[site.as_str().as_bytes(), node.as_str().as_bytes()],
    )
}

/// A node's place in a site's rendezvous order. `Rank` orders by score,
/// higher is greater; on equal scores (a 2^-64 event, but it must still not
/// depend on input order) the smaller node name is greater. So the best node
/// is the maximum, and sorting descending gives the preference list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rank<'a> {
    pub score: u64,
    pub node: &'a NodeName,
}

impl<'a> Rank<'a> {
    pub fn new(site: &SiteName, node: &'a NodeName) -> Self {
        Rank {
            score: rendezvous_score(site, node),
            node,
        }
    }
}

impl Ord for Rank<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .cmp(&other.score)
            .then_with(|| other.node.cmp(self.node))
    }
}

impl PartialOrd for Rank<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteName {
        s.parse().expect("test site names are valid")
    }

    fn node(s: &str) -> NodeName {
        s.parse().expect("test node names are valid")
    }

    /// The buffer of LLVM's `unittests/Support/xxhashTest.cpp` (xorshift64
    /// from 1, low byte of each step), whose XXH3-64 values LLVM checks
    /// against the reference implementation.
    fn llvm_buffer(len: usize) -> Vec<u8> {
        let mut x: u64 = 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn xxh3_matches_published_vectors() {
        // The empty input, from xxHash's own sanity check (XSUM_XXH3_testdata).
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(xxh3_64(b"a"), 0xE6C6_32B6_1E96_4E1F);
        // One vector per length class of XXH3 (0, 1-3, 4-8, 9-16, 17-128,
        // 129-240, >240 with one and several blocks), from LLVM's tests.
        for (len, want) in [
            (0, 0x2d06800538d394c2_u64),
            (1, 0xd0d496e05c553485),
            (3, 0x6ea2d59aca5c3778),
            (4, 0xbf65290914e80242),
            (8, 0xabc1413da6cd0209),
            (9, 0x8bc89400bfed51f6),
            (16, 0x7e46916754d7c9b8),
            (17, 0xed4be912ba5f836d),
            (128, 0x06a146ee9a2da378),
            (129, 0xbc7138129bf065da),
            (403, 0xcefeb3ffa532ad8c),
            (2048, 0x330ce110cbb79eae),
            (2243, 0x0979f786a24edde7),
        ] {
            assert_eq!(xxh3_64(&llvm_buffer(len)), want, "length {len}");
        }
    }

    #[test]
    fn encoding_is_length_prefixed() {
        let mut want = Vec::new();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"dom");
        want.extend_from_slice(&2u64.to_le_bytes());
        want.extend_from_slice(b"ab");
        want.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(hash_fields("dom", &[b"ab", b""]), xxh3_64(&want));
    }

    #[test]
    fn field_boundaries_and_domains_matter() {
        assert_ne!(
            hash_fields("d", &[b"ab", b"c"]),
            hash_fields("d", &[b"a", b"bc"])
        );
        assert_ne!(
            hash_fields("d", &[b"abc"]),
            hash_fields("d", &[b"abc", b""])
        );
        assert_ne!(hash_fields("d", &[b"x"]), hash_fields("e", &[b"x"]));
        assert_ne!(hash_fields("dx", &[]), hash_fields("d", &[b"x"]));
    }

    /// Pinned: if any of these change, every site in a running cluster moves.
    /// Do not update them; version the domain tag instead. The values were
    /// computed independently of this code: the encoding of the module docs
    /// built by hand and hashed with the reference C library (libxxhash 0.8).
    #[test]
    fn rendezvous_scores_are_pinned() {
        for (s, n, want) in [
            ("blog", "n1", 0x9b37_2076_3ae8_753d_u64),
            ("blog", "n2", 0x9036_f4fb_0107_2cb8),
            ("shop", "n1", 0xc167_0ff7_a5c2_9088),
            ("a", "bc", 0x95bf_eeff_b0dd_bff5),
            ("ab", "c", 0x529f_8469_7ce4_e863),
        ] {
            let got = rendezvous_score(&site(s), &node(n));
            assert_eq!(got, want, "score of site {s} on node {n}: {got:#018x}");
        }
    }

    #[test]
    fn rank_orders_by_score_then_smaller_name() {
        let (a, b) = (node("a"), node("b"));
        let hi_a = Rank { score: 7, node: &a };
        let hi_b = Rank { score: 7, node: &b };
        let lo_a = Rank { score: 6, node: &a };
        assert!(hi_a > hi_b, "equal scores: the smaller name ranks higher");
        assert!(hi_b > lo_a, "a higher score ranks higher whatever the name");
    }
}
