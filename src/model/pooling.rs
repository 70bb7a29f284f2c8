//! Sentence pooling over the encoder's token states: mean over real tokens, or the [CLS] state.

use candle_core::{DType, Result, Tensor, D};
use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
}

impl Pooling {
    /// Pools sequences packed end to end: `states` holds `width` floats a token, and sequence
    /// `s` is tokens `offsets[s]..offsets[s + 1]`. One vector a sequence.
    pub fn pool_packed(self, states: &[f32], offsets: &[usize], width: usize) -> Vec<Vec<f32>> {
        offsets
            .windows(2)
            .map(|span| {
                let tokens = &states[span[0] * width..span[1] * width];
                match self {
                    Pooling::Cls => tokens
                        .get(..width)
                        .map_or(vec![0.0; width], <[f32]>::to_vec),
                    Pooling::Mean => mean_of_rows(tokens, width),
                }
            })
            .collect()
    }

    /// `hidden` is (batch, seq, dim), `mask` is (batch, seq) with 1 for real tokens.
    pub fn pool(self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1),
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                summed.broadcast_div(&counts)
            }
        }
    }
}

/// The mean of the `width`-wide rows of `rows`; zeros where there are none.
fn mean_of_rows(rows: &[f32], width: usize) -> Vec<f32> {
    let mut sum = vec![0f32; width];
    for row in rows.chunks_exact(width) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    let count = (rows.len() / width).max(1) as f32;
    sum.iter_mut().for_each(|s| *s /= count);
    sum
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::Pooling;

    /// Packed pooling gives what pooling the same states padded gives.
    #[test]
    fn packed_pooling_matches_padded_pooling() {
        let (width, lengths) = (3, [2usize, 4, 1]);
        let longest = 4;
        let mut offsets = vec![0];
        for len in lengths {
            offsets.push(offsets.last().unwrap() + len);
        }
        let states: Vec<f32> = (0..offsets[3] * width)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let mut padded = vec![0f32; lengths.len() * longest * width];
        let mut mask = vec![0u32; lengths.len() * longest];
        for (s, span) in offsets.windows(2).enumerate() {
            let rows = &states[span[0] * width..span[1] * width];
            padded[s * longest * width..][..rows.len()].copy_from_slice(rows);
            mask[s * longest..][..span[1] - span[0]].fill(1);
        }
        let hidden =
            Tensor::from_vec(padded, (lengths.len(), longest, width), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (lengths.len(), longest), &Device::Cpu).unwrap();
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let want = pooling
                .pool(&hidden, &mask)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let got = pooling.pool_packed(&states, &offsets, width);
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() < 1e-6, "{pooling:?}: {g} vs {w}");
            }
        }
    }
}
