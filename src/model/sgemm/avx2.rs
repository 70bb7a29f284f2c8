//! The AVX2 + FMA microkernel: up to 6 activation rows against one 16-output weight panel,
//! twelve accumulators held in registers over the whole input dimension. Chosen at run time.
//!
//! `unsafe` is confined here: intrinsics behind a run-time feature check, and pointer reads
//! whose bounds the safe wrapper asserts first.
#![allow(unsafe_code)]

use super::{Kernel, PANEL, ROWS};

/// The kernel, where this CPU runs it.
pub(super) fn kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(checked);
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
fn checked(x: &[f32], rows: usize, panel: &[f32], out: &mut [f32], stride: usize) {
    let inputs = panel.len() / PANEL;
    assert!((1..=ROWS).contains(&rows), "1 to {ROWS} rows");
    assert!(x.len() >= rows * inputs && stride >= PANEL);
    assert!(out.len() >= (rows - 1) * stride + PANEL);
    assert_eq!(panel.len(), inputs * PANEL);
    // SAFETY: `kernel()` hands this out only after AVX2 and FMA were detected, and the asserts
    // above bound every read of `x` and `panel` and every write of `out`.
    unsafe {
        match rows {
            1 => x86::rows::<1>(x.as_ptr(), inputs, panel.as_ptr(), out.as_mut_ptr(), stride),
            2 => x86::rows::<2>(x.as_ptr(), inputs, panel.as_ptr(), out.as_mut_ptr(), stride),
            3 => x86::rows::<3>(x.as_ptr(), inputs, panel.as_ptr(), out.as_mut_ptr(), stride),
            4 => x86::rows::<4>(x.as_ptr(), inputs, panel.as_ptr(), out.as_mut_ptr(), stride),
            5 => x86::rows::<5>(x.as_ptr(), inputs, panel.as_ptr(), out.as_mut_ptr(), stride),
            _ => x86::rows::<6>(x.as_ptr(), inputs, panel.as_ptr(), out.as_mut_ptr(), stride),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::PANEL;

    /// `out[r * stride..][0..16] = sum_i x[r][i] * panel[i][0..16]` for `R` rows of `inputs`
    /// values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows<const R: usize>(
        x: *const f32,
        inputs: usize,
        panel: *const f32,
        out: *mut f32,
        stride: usize,
    ) {
        let mut low = [_mm256_setzero_ps(); R];
        let mut high = [_mm256_setzero_ps(); R];
        for i in 0..inputs {
            let w = panel.add(i * PANEL);
            let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
            for r in 0..R {
                let a = _mm256_broadcast_ss(&*x.add(r * inputs + i));
                low[r] = _mm256_fmadd_ps(a, w0, low[r]);
                high[r] = _mm256_fmadd_ps(a, w1, high[r]);
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(out.add(r * stride), low[r]);
            _mm256_storeu_ps(out.add(r * stride + 8), high[r]);
        }
    }
}
