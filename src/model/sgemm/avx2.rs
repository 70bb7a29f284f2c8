//! The AVX2 + FMA microkernel: up to 6 activation rows against one 16-output weight panel,
//! twelve accumulators held in registers over the whole input dimension. Chosen at run time.
//!
//! `unsafe` is confined here: intrinsics behind a run-time feature check, and pointer reads
//! whose bounds the safe wrapper asserts first.
#![allow(unsafe_code)]

use super::{Kernel, Tile, PANEL};

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
    let depth = tile.panel.len() / PANEL;
    let rows = tile.rows;
    assert!((1..=ROWS).contains(&rows), "1 to {ROWS} rows");
    assert_eq!(tile.panel.len(), depth * PANEL);
    assert!(tile.x.len() >= (rows - 1) * tile.x_stride + depth);
    assert!(tile.out_stride >= PANEL && tile.out.len() >= (rows - 1) * tile.out_stride + PANEL);
    let (x, panel, out) = (tile.x.as_ptr(), tile.panel.as_ptr(), tile.out.as_mut_ptr());
    let strides = x86::Strides {
        x: tile.x_stride,
        depth,
        out: tile.out_stride,
        accumulate: tile.accumulate,
    };
    // SAFETY: `kernel()` hands this out only after AVX2 and FMA were detected, and the asserts
    // above bound every read of `x` and `panel` and every read and write of `out`.
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

    use super::PANEL;

    /// How far ahead of its loads the kernel asks for the weights: 2 KiB, as the AVX-512
    /// kernel does (16 rows over MiniLM's layers: 100 GFLOP/s without, 119 with; 4 KiB: 111).
    const PREFETCH_FLOATS: usize = PANEL * 32;

    /// Where a tile's operands lie (see [`super::Tile`]).
    #[derive(Clone, Copy)]
    pub(super) struct Strides {
        pub x: usize,
        pub depth: usize,
        pub out: usize,
        pub accumulate: bool,
    }

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
        for i in 0..s.depth {
            let w = panel.add(i * PANEL);
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(PREFETCH_FLOATS).cast());
            let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
            for r in 0..R {
                let a = _mm256_broadcast_ss(&*x.add(r * s.x + i));
                low[r] = _mm256_fmadd_ps(a, w0, low[r]);
                high[r] = _mm256_fmadd_ps(a, w1, high[r]);
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(out.add(r * s.out), low[r]);
            _mm256_storeu_ps(out.add(r * s.out + 8), high[r]);
        }
    }
}
