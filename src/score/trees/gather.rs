//! The node walk in AVX2: eight rows to a vector, each step's node and feature value
//! fetched by gather instructions, and a whole chunk's vectors walked a level at a time so
//! that the CPU overlaps their gathers.
//!
//! Gathers cost by the element, so a node here is 8 bytes, fetched as one 64-bit element:
//! its threshold, and one word holding its feature, its first child (breadth first, a
//! split's false child is its true child's neighbour) and two flags. The comparisons are
//! the scalar walk's (`vcmpps` with `LE_OQ` or `LT_OQ`: false for NaN, as `v <= t` and
//! `v < t` are in Rust and C++), so each row reaches the same leaf by a cheaper way there.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::layout::{Forest, Mode};

/// Rows to a vector.
pub const LANES: usize = 8;

/// Where NaN goes to the true child (`nodes_missing_value_tracks_true`).
const MISSING_TRUE: u32 = 1 << 31;
/// A leaf: the walk stays on it.
const LEAF: u32 = 1 << 30;

/// The forest's nodes for the AVX2 walk, in [`Forest::nodes`]' order (so a walk ends on
/// the same node index either way).
#[derive(Debug)]
pub struct Packed {
    /// Per node: the threshold's bits (a leaf's one weight, if it has one) in the low half,
    /// the word in the high half: flags in bits 31 and 30, then the first child's index
    /// from its tree's root (a leaf's own), then the feature in the low `feature_bits`.
    nodes: Vec<u64>,
    feature_bits: u32,
    /// [`Forest::n_features`], at least 1: the values each row must hold.
    n_features: usize,
}

impl Packed {
    /// The packed nodes, or `None` where a forest does not fit them: a split whose children
    /// are not neighbours, or features and tree sizes too big to share 30 bits.
    pub fn build(f: &Forest) -> Option<Self> {
        let feature_bits = usize::BITS - (f.n_features.max(2) - 1).leading_zeros();
        let child_limit = 1u64 << 30u32.checked_sub(feature_bits)?;
        let ends = f.roots.iter().skip(1).map(|&r| r as usize);
        let ends = ends.chain([f.nodes.len()]);
        let mut nodes = Vec::with_capacity(f.nodes.len());
        for (&root, end) in f.roots.iter().zip(ends) {
            for i in root as usize..end {
                let n = &f.nodes[i];
                let (bits, first, flags) = match n.mode {
                    Mode::Leaf => {
                        let weight = f.weights_of(n).first().map_or(0.0, |w| w.1);
                        (weight.to_bits(), i as u64, LEAF)
                    }
                    _ if n.children[1] != n.children[0] + 1 => return None,
                    _ => {
                        let flags = if n.missing_true { MISSING_TRUE } else { 0 };
                        (n.threshold.to_bits(), u64::from(n.children[0]), flags)
                    }
                };
                let from_root = first
                    .checked_sub(u64::from(root))
                    .filter(|&c| c < child_limit)?;
                let feature = if n.mode == Mode::Leaf { 0 } else { n.feature };
                let word = u64::from(flags) | from_root << feature_bits | u64::from(feature);
                nodes.push(word << 32 | u64::from(bits));
            }
        }
        (nodes.len() < i32::MAX as usize).then_some(Self {
            nodes,
            feature_bits,
            n_features: f.n_features.max(1),
        })
    }

    /// Whether rows of `stride` values may be walked: every feature a split reads lies in its
    /// row, and eight rows' offsets fit the gathers' `i32` indices.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn fits(&self, stride: usize) -> bool {
        stride >= self.n_features
            && stride
                .checked_mul(LANES)
                .is_some_and(|n| n < i32::MAX as usize)
    }

    /// The leaves the tree at `root` (of `depth` levels, [`Forest::depths`]) leads each of
    /// `at.len()` rows to (a multiple of [`LANES`]; row `k`'s values are
    /// `x[k * stride..][..stride]`), into `at`. Only for forests with a [`Forest::shared`]
    /// comparison, `LEQ` saying which.
    ///
    /// # Safety
    ///
    /// The CPU has AVX2, `root` is a root of the forest these nodes were built from,
    /// [`Packed::fits`]`(stride)` holds and `x.len() >= at.len() * stride`: then every
    /// gather reads inside `self.nodes` (each node's children are nodes of the same tree) or
    /// inside `x`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub unsafe fn leaves<const LEQ: bool>(
        &self,
        root: u32,
        depth: u32,
        x: &[f32],
        stride: usize,
        at: &mut [u32],
    ) {
        debug_assert!(at.len().is_multiple_of(LANES) && x.len() >= at.len() * stride);
        debug_assert!(self.fits(stride) && (root as usize) < self.nodes.len());
        let walk = Walk {
            nodes: self.nodes.as_ptr().cast(),
            // Lane k reads row k of its vector: offsets k * stride from the vector's first row.
            lane_rows: _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(stride as i32),
            ),
            root: _mm256_set1_epi32(root as i32),
            feature_mask: _mm256_set1_epi32(((1u32 << self.feature_bits) - 1) as i32),
            child_shift: _mm_cvtsi32_si128(self.feature_bits as i32 + 2),
        };
        for chunk in at.chunks_exact_mut(LANES) {
            // SAFETY: eight u32 are one unaligned 256-bit store.
            unsafe { _mm256_storeu_si256(chunk.as_mut_ptr().cast(), walk.root) };
        }
        for _ in 0..depth {
            let mut all = _mm256_set1_epi32(-1);
            for (v, chunk) in at.chunks_exact_mut(LANES).enumerate() {
                // SAFETY: eight u32, loaded and stored unaligned; row v * LANES starts
                // inside x, and the step reads as the caller's contract allows.
                unsafe {
                    let now = _mm256_loadu_si256(chunk.as_ptr().cast());
                    let rows = x.as_ptr().add(v * LANES * stride);
                    let (next, word) = walk.step::<LEQ>(now, rows);
                    all = _mm256_and_si256(all, word);
                    _mm256_storeu_si256(chunk.as_mut_ptr().cast(), next);
                }
            }
            // Every row of the chunk at a leaf: the remaining levels would not move them.
            if _mm256_testc_si256(all, _mm256_set1_epi32(LEAF as i32)) != 0 {
                break;
            }
        }
    }
}

/// One tree's walk: what every step needs.
#[cfg(target_arch = "x86_64")]
struct Walk {
    nodes: *const i64,
    lane_rows: __m256i,
    root: __m256i,
    feature_mask: __m256i,
    /// Where a word's first child starts, plus the two flag bits shifted out above it.
    child_shift: __m128i,
}

#[cfg(target_arch = "x86_64")]
impl Walk {
    /// One level for eight rows at nodes `now`: their next nodes, and the nodes' words
    /// (whose [`LEAF`] bit says a row had already arrived).
    ///
    /// # Safety
    ///
    /// AVX2, and [`Packed::leaves`]' contract: `now` are nodes of its tree, and `rows`
    /// plus `lane_rows` plus any feature a split reads lies inside the caller's `x`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn step<const LEQ: bool>(&self, now: __m256i, rows: *const f32) -> (__m256i, __m256i) {
        // SAFETY (each gather): indices inside the nodes or the rows, by the contract above.
        let (low, high) = unsafe {
            let low = _mm256_i32gather_epi64::<8>(self.nodes, _mm256_castsi256_si128(now));
            let high = _mm256_i32gather_epi64::<8>(self.nodes, _mm256_extracti128_si256::<1>(now));
            (_mm256_castsi256_ps(low), _mm256_castsi256_ps(high))
        };
        // Thresholds are the even halves, words the odd ones; shuffle_ps picks them within
        // 128-bit lanes (rows 0 1 4 5 2 3 6 7), and the permute puts rows back in order.
        let threshold = _mm256_shuffle_ps::<0b10_00_10_00>(low, high);
        let threshold = _mm256_castsi256_ps(_mm256_permute4x64_epi64::<0b11_01_10_00>(
            _mm256_castps_si256(threshold),
        ));
        let word = _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(low, high));
        let word = _mm256_permute4x64_epi64::<0b11_01_10_00>(word);
        let feature = _mm256_and_si256(word, self.feature_mask);
        let offsets = _mm256_add_epi32(self.lane_rows, feature);
        let v = unsafe { _mm256_i32gather_ps::<4>(rows, offsets) };
        let goes = if LEQ {
            _mm256_cmp_ps::<_CMP_LE_OQ>(v, threshold)
        } else {
            _mm256_cmp_ps::<_CMP_LT_OQ>(v, threshold)
        };
        // NaN goes to the true child where the node tracks missing values there (bit 31, as
        // a sign: srai spreads it over the lane); a leaf always "goes true", to itself.
        let tracks = _mm256_srai_epi32::<31>(word);
        let leaf = _mm256_srai_epi32::<31>(_mm256_slli_epi32::<1>(word));
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        let goes = _mm256_or_si256(_mm256_castps_si256(goes), _mm256_and_si256(nan, tracks));
        let goes = _mm256_or_si256(goes, leaf);
        // The true child is the first, the false one the next: first + 1 + mask (-1 or 0).
        let first = _mm256_srl_epi32(_mm256_slli_epi32::<2>(word), self.child_shift);
        let first = _mm256_add_epi32(_mm256_add_epi32(first, self.root), _mm256_set1_epi32(1));
        (_mm256_add_epi32(first, goes), word)
    }
}
