//! Packing weights given output by output (keys, PyTorch's `(out, in)` layout) into panels,
//! eight outputs at a time through an 8 x 8 AVX transpose where the kernels may use AVX2
//! (`WICK_SIMD`).
//!
//! A panel stores each input's `width` outputs side by side, so packing output rows is a
//! transpose. Element by element it cost attention 12 us per head of a 195-token sequence
//! (the keys), an eighth of the head's time; eight rows at a time it is a few loads, 24
//! shuffles and eight stores per 64 values.
#![allow(unsafe_code)]

/// Writes `rows[k][i] + bias[i]` to `panel[i * width + column + k]` for `k < 8` and the
/// inputs `i` it returns the count of: every whole block of eight, or none where the kernels
/// may not use AVX2 ([`crate::model::simd::level`]). The caller packs the inputs left over.
pub(super) fn pack_eight(
    rows: [&[f32]; 8],
    bias: Option<&[f32]>,
    inputs: usize,
    panel: &mut [f32],
    column: usize,
    width: usize,
) -> usize {
    assert!(rows.iter().all(|row| row.len() >= inputs), "row length");
    assert!(bias.is_none_or(|b| b.len() >= inputs), "bias length");
    assert!(
        column + 8 <= width && panel.len() >= inputs * width,
        "panel size"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use crate::model::simd::{level, Level};
        if level() >= Level::Avx2 {
            let blocks = inputs / 8 * 8;
            // SAFETY: the level is AVX2 or more only where the CPU has AVX2; the asserts above
            // bound every load (`blocks <= inputs` values of each row and of the bias) and
            // every store (input `i < inputs` at `i * width + column + 8 <= inputs * width`).
            unsafe { x86::pack_blocks(&rows, bias, blocks, panel, column, width) };
            return blocks;
        }
    }
    0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::pack_eight`] for the first `blocks` inputs, a multiple of eight.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pack_blocks(
        rows: &[&[f32]; 8],
        bias: Option<&[f32]>,
        blocks: usize,
        panel: &mut [f32],
        column: usize,
        width: usize,
    ) {
        let out = panel.as_mut_ptr().add(column);
        for i in (0..blocks).step_by(8) {
            let loaded: [__m256; 8] =
                std::array::from_fn(|k| _mm256_loadu_ps(rows[k].as_ptr().add(i)));
            let columns = transpose(loaded);
            for (d, mut values) in columns.into_iter().enumerate() {
                if let Some(bias) = bias {
                    values = _mm256_add_ps(values, _mm256_set1_ps(bias[i + d]));
                }
                _mm256_storeu_ps(out.add((i + d) * width), values);
            }
        }
    }

    /// Rows `r[k] = [a(k, 0) .. a(k, 7)]` into columns `[a(0, d) .. a(7, d)]`.
    #[target_feature(enable = "avx2")]
    unsafe fn transpose(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_rows_land_in_their_columns_with_the_bias() {
        for inputs in [8, 13, 32, 3] {
            let rows: Vec<Vec<f32>> = (0..8)
                .map(|k| (0..inputs).map(|i| (k * 100 + i) as f32).collect())
                .collect();
            let bias: Vec<f32> = (0..inputs).map(|i| i as f32 * 0.5).collect();
            let width = 16;
            let mut panel = vec![f32::NAN; inputs * width];
            let slices: [&[f32]; 8] = std::array::from_fn(|k| rows[k].as_slice());
            let packed = pack_eight(slices, Some(&bias), inputs, &mut panel, 8, width);
            let avx2 = crate::model::simd::level() >= crate::model::simd::Level::Avx2;
            assert_eq!(packed, if avx2 { inputs / 8 * 8 } else { 0 });
            for i in 0..inputs {
                for k in 0..8 {
                    let got = panel[i * width + 8 + k];
                    if i < packed {
                        assert_eq!(got, (k * 100 + i) as f32 + i as f32 * 0.5);
                    } else {
                        assert!(got.is_nan(), "input {i} is the caller's to pack");
                    }
                }
                assert!(panel[i * width..i * width + 8].iter().all(|v| v.is_nan()));
            }
        }
    }
}
