//! The AVX2 + FMA microkernel: up to 6 activation rows against one 16-output weight panel,
//! twelve accumulators held in registers over the whole input dimension. Chosen at run time.
//!
//! `unsafe` is confined here: intrinsics behind a run-time feature check, and pointer reads
//! whose bounds the safe wrapper asserts first.
#![allow(unsafe_code)]

use super::{Kernel, RawTile, Tile, PANEL};

/// Activation rows one call computes: 6 x 2 accumulators, plus two weight registers and one
/// broadcast, fill 15 of the 16 AVX registers.
pub(super) const ROWS: usize = 6;

/// The kernel, where this CPU runs it.
pub(super) fn kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
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
    // SAFETY: `kernel()` hands this out only after AVX2 and FMA were detected, and `into_raw`
    // asserted that the tile bounds every read of `x` and `panel` and every read and write of
    // `out`.
    unsafe {
        match rows {
            1 => x86::rows::<1>(x, panel, out, strides),
            2 => x86::rows::<2>(x, panel, out, strides),
            3 => x86::rows::<3>(x, panel, out, strides),
            4 => x86::rows::<4>(x, panel, out, strides),
            5 => x86::rows::<5>(x, panel, out, strides),
            _ => x86::rows::<6>(x, panel, out, strides),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::Strides;
    use super::PANEL;

    /// How far ahead of its loads the kernel asks for the weights: 2 KiB, as the AVX-512
    /// kernel does (16 rows over MiniLM's layers: 100 GFLOP/s without, 119 with; 4 KiB: 111).
    pub(super) const PREFETCH_FLOATS: usize = PANEL * 32;

    /// `out[r * s.out..][0..16] (+)= sum_i x[r * s.x + i] * panel[i][0..16]` for `R` rows and
    /// `s.depth` inputs.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows<const R: usize>(
        x: *const f32,
        panel: *const f32,
        out: *mut f32,
        s: Strides,
    ) {
        let mut low = [_mm256_setzero_ps(); R];
        let mut high = [_mm256_setzero_ps(); R];
        if s.accumulate {
            for r in 0..R {
                low[r] = _mm256_loadu_ps(out.add(r * s.out));
                high[r] = _mm256_loadu_ps(out.add(r * s.out + 8));
            }
        }
        // Four inputs a turn: each row's address is computed once a turn and the four
        // broadcasts take constant offsets from it. A turn per input spent about one integer
        // operation per row on addressing, and those compete with the FMAs for their ports.
        let mut step = |i: usize| {
            let w = panel.add(i * PANEL);
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(s.prefetch).cast());
            let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
            for r in 0..R {
                let a = _mm256_broadcast_ss(&*x.add(r * s.x + i));
                low[r] = _mm256_fmadd_ps(a, w0, low[r]);
                high[r] = _mm256_fmadd_ps(a, w1, high[r]);
            }
        };
        let turns = s.depth / 4 * 4;
        for i in (0..turns).step_by(4) {
            step(i);
            step(i + 1);
            step(i + 2);
            step(i + 3);
        }
        for i in turns..s.depth {
            step(i);
        }
        for r in 0..R {
            _mm256_storeu_ps(out.add(r * s.out), low[r]);
            _mm256_storeu_ps(out.add(r * s.out + 8), high[r]);
        }
    }
}
