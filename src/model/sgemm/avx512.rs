//! The AVX-512 microkernel: up to 14 activation rows against one 32-output weight panel, two
//! 512-bit accumulators a row: 28 accumulators, two weight registers and one broadcast of the
//! 32 registers. Chosen at run time, where [`crate::model::simd::level`] allows it.
//!
//! Per input it loads two weight vectors and broadcasts fourteen activations for 28 FMAs, so
//! the two FMA ports, not the loads, bound it (a 16-wide panel would need 13 loads for 12
//! FMAs). Fourteen rows' share of the inputs (21 KiB over 384 inputs) stays in L1; the panel
//! streams from L2 under the prefetch.
//!
//! `unsafe` is confined here: intrinsics behind a run-time feature check, and pointer reads
//! whose bounds the safe wrapper asserts first.
#![allow(unsafe_code)]

use super::{Kernel, RawTile, Tile};

/// Activation rows one call computes.
pub(super) const ROWS: usize = 14;
/// Outputs per weight panel: two AVX-512 registers of sixteen floats.
const PANEL: usize = 32;

/// The kernel, where this CPU runs it.
pub(super) fn kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::model::simd::{detected, Level};
        if detected() >= Level::Avx512 {
            return Some(Kernel {
                run: checked,
                rows: ROWS,
                width: PANEL,
            });
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
fn checked(tile: Tile) {
    let RawTile {
        x,
        panel,
        out,
        rows,
        strides,
    } = tile.into_raw(PANEL, ROWS, x86::PREFETCH_FLOATS);
    // SAFETY: `kernel()` hands this out only after AVX-512 F was detected, and `into_raw`
    // asserted that the tile bounds every read of `x` and `panel` and every read and write of
    // `out`.
    unsafe {
        match rows {
            1 => x86::rows::<1>(x, panel, out, strides),
            2 => x86::rows::<2>(x, panel, out, strides),
            3 => x86::rows::<3>(x, panel, out, strides),
            4 => x86::rows::<4>(x, panel, out, strides),
            5 => x86::rows::<5>(x, panel, out, strides),
            6 => x86::rows::<6>(x, panel, out, strides),
            7 => x86::rows::<7>(x, panel, out, strides),
            8 => x86::rows::<8>(x, panel, out, strides),
            9 => x86::rows::<9>(x, panel, out, strides),
            10 => x86::rows::<10>(x, panel, out, strides),
            11 => x86::rows::<11>(x, panel, out, strides),
            12 => x86::rows::<12>(x, panel, out, strides),
            13 => x86::rows::<13>(x, panel, out, strides),
            _ => x86::rows::<14>(x, panel, out, strides),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::Strides;
    use super::PANEL;

    /// How far ahead of its loads the kernel asks for the weights: 2 KiB. A model's weights
    /// stream from L3 or memory once a pass, and the kernel's own loads keep too few lines in
    /// flight to cover that latency: without the prefetch a 16-row product over MiniLM's
    /// 42 MB of layers ran at 93 GFLOP/s on two cores, with it at 179 (1 KiB: 173, 4 KiB: 153).
    pub(super) const PREFETCH_FLOATS: usize = PANEL * 16;

    /// `out[r * s.out..][0..32] (+)= sum_i x[r * s.x + i] * panel[i][0..32]` for `R` rows and
    /// `s.depth` inputs.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows<const R: usize>(
        x: *const f32,
        panel: *const f32,
        out: *mut f32,
        s: Strides,
    ) {
        // The results' lines, asked for now so that they are in cache when the results are
        // stored: the outputs of a large product are not, and 28 stores into missing lines
        // stalled each call's end (1-2% of a pass of seven paragraphs; the AVX2 kernel's 12
        // stores did not gain from it).
        for r in 0..R {
            let row = out.add(r * s.out);
            _mm_prefetch::<_MM_HINT_T0>(row.cast());
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(PANEL / 2).cast());
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(PANEL - 1).cast());
        }
        let mut low = [_mm512_setzero_ps(); R];
        let mut high = [_mm512_setzero_ps(); R];
        if s.accumulate {
            for r in 0..R {
                low[r] = _mm512_loadu_ps(out.add(r * s.out));
                high[r] = _mm512_loadu_ps(out.add(r * s.out + 16));
            }
        }
        for i in 0..s.depth {
            let w = panel.add(i * PANEL);
            let ahead = w.wrapping_add(s.prefetch);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
            let (w0, w1) = (_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(16)));
            for r in 0..R {
                let a = _mm512_set1_ps(*x.add(r * s.x + i));
                low[r] = _mm512_fmadd_ps(a, w0, low[r]);
                high[r] = _mm512_fmadd_ps(a, w1, high[r]);
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(out.add(r * s.out), low[r]);
            _mm512_storeu_ps(out.add(r * s.out + 16), high[r]);
        }
    }
}
