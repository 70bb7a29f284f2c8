//! GGUF block layouts of the weight types wick multiplies itself and of the 8-bit activation
//! blocks they meet, byte for byte as ggml stores them, with their dequantisation.

use half::f16;

/// Elements in a block of the 32-wide types (Q4_1, Q5_0, Q8_0, Q8_1).
pub(super) const QK: usize = 32;
/// Elements in a super-block of the k-quants (Q4_K, Q6_K, Q8_K).
pub(super) const QK_K: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ4_1 {
    pub(super) d: f16,
    pub(super) m: f16,
    pub(super) qs: [u8; QK / 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ5_0 {
    pub(super) d: f16,
    pub(super) qh: [u8; 4],
    pub(super) qs: [u8; QK / 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ8_0 {
    pub(super) d: f16,
    pub(super) qs: [i8; QK],
}

/// Q8_0 as the interleaved signed kernels meet it: `starts[k]` is where the AVX-512 kernels
/// start lane `k`'s sum (see `avx512::signed_tokens`), made once per block rather than once
/// per group of eight weight rows.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ8_0Lanes {
    pub(super) d: f16,
    pub(super) qs: [i8; QK],
    pub(super) starts: [i32; 8],
    /// The whole block's start for the summed kernels, `FLOAT_INTEGER_BIAS` minus 128 times
    /// the sum of its quants, and a zero after it: a 64-bit broadcast puts the start in each
    /// row's even dword only.
    pub(super) block_start: [i32; 2],
    /// The quants plus 128 (unsigned, as `maddubs` wants one side) in the order the AVX2
    /// Q5_0 prefill kernel meets them (see `avx2::q5_0_prefill`): for lanes `2m` and
    /// `2m + 1`, bytes `8m, 8m + 1, 8m + 4, 8m + 5` (word `2m`), then
    /// `8m + 2, 8m + 3, 8m + 6, 8m + 7` (word `2m + 1`).
    pub(super) paired: [[u8; 4]; 8],
    /// `d` widened, so a kernel broadcasts it with one load.
    pub(super) scale: f32,
}

/// Q8_0 with `s = d * sum(qs)`, which Q4_1's offset needs.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ8_1 {
    pub(super) d: f16,
    pub(super) s: f16,
    pub(super) qs: [i8; QK],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ4K {
    pub(super) d: f16,
    pub(super) dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed.
    pub(super) scales: [u8; 12],
    pub(super) qs: [u8; QK_K / 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ6K {
    pub(super) ql: [u8; QK_K / 2],
    pub(super) qh: [u8; QK_K / 4],
    pub(super) scales: [i8; QK_K / 16],
    pub(super) d: f16,
}

/// The activation block of the k-quants: f32 scale and the sums of each 16 quants.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct BlockQ8K {
    pub(super) d: f32,
    pub(super) qs: [i8; QK_K],
    pub(super) bsums: [i16; QK_K / 16],
}

const _: () = {
    assert!(std::mem::size_of::<BlockQ4_1>() == 20);
    assert!(std::mem::size_of::<BlockQ5_0>() == 22);
    assert!(std::mem::size_of::<BlockQ8_0>() == 34);
    assert!(std::mem::size_of::<BlockQ8_0Lanes>() == 112);
    assert!(std::mem::size_of::<BlockQ8_1>() == 36);
    assert!(std::mem::size_of::<BlockQ4K>() == 144);
    assert!(std::mem::size_of::<BlockQ6K>() == 210);
    assert!(std::mem::size_of::<BlockQ8K>() == 292);
};

/// Q4_K's scale and minimum of sub-block `j` (ggml's `get_scale_min_k4`).
pub(super) fn q4k_scale_min(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q5_0's 5-bit quant `j` of 32, still offset by 16.
pub(super) fn q5_0_quant(block: &BlockQ5_0, j: usize) -> i32 {
    let qh = u32::from_le_bytes(block.qh);
    let low = block.qs[j % 16];
    let nibble = if j < 16 { low & 0xF } else { low >> 4 };
    let high = ((qh >> j) & 1) << 4;
    (u32::from(nibble) | high) as i32 - 16
}

/// Q6_K's 6-bit quant `j` of 256, still offset by 32.
pub(super) fn q6k_quant(block: &BlockQ6K, j: usize) -> i32 {
    let (half, l) = (j / 128, j % 128);
    let (ql, qh) = (&block.ql[half * 64..], &block.qh[half * 32..]);
    let (quarter, l) = (l / 32, l % 32);
    let low = match quarter {
        0 => ql[l] & 0xF,
        1 => ql[l + 32] & 0xF,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    let high = (qh[l] >> (2 * quarter)) & 3;
    i32::from(low | (high << 4)) - 32
}

/// A weight block that can be expanded to f32 (tests, and the reference scalar path).
pub(super) trait Dequantize {
    const ELEMS: usize;
    fn dequantize(&self, out: &mut [f32]);
}

impl Dequantize for BlockQ4_1 {
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = f32::from(q & 0xF) * d + m;
            out[j + 16] = f32::from(q >> 4) * d + m;
        }
    }
}

impl Dequantize for BlockQ5_0 {
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, v) in out.iter_mut().enumerate().take(QK) {
            *v = q5_0_quant(self, j) as f32 * d;
        }
    }
}

impl Dequantize for BlockQ8_0 {
    const ELEMS: usize = QK;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (v, &q) in out.iter_mut().zip(&self.qs) {
            *v = f32::from(q) * d;
        }
    }
}

impl Dequantize for BlockQ4K {
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        for (chunk, (q, out)) in self.qs.chunks(32).zip(out.chunks_mut(64)).enumerate() {
            let (sc_low, m_low) = q4k_scale_min(2 * chunk, &self.scales);
            let (sc_high, m_high) = q4k_scale_min(2 * chunk + 1, &self.scales);
            for (l, &byte) in q.iter().enumerate() {
                out[l] = d * f32::from(sc_low) * f32::from(byte & 0xF) - dmin * f32::from(m_low);
                out[l + 32] =
                    d * f32::from(sc_high) * f32::from(byte >> 4) - dmin * f32::from(m_high);
            }
        }
    }
}

impl Dequantize for BlockQ6K {
    const ELEMS: usize = QK_K;
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, v) in out.iter_mut().enumerate().take(QK_K) {
            let scale = f32::from(self.scales[j / 16]);
            *v = d * scale * q6k_quant(self, j) as f32;
        }
    }
}
