//! Causal attention of a chunk of queries against one sequence's KV cache, with grouped
//! key/value heads and an optional sliding window; heads and tokens run in parallel.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Attend only to positions `p - window < j <= p`.
    pub window: Option<usize>,
}

/// `q` holds `positions.len()` rows of `heads x head_dim`; `keys`/`values` hold the sequence's
/// cache (`kv_heads x head_dim` per position), already including the chunk's own positions.
/// Each query at position `p` attends to cached positions up to `p`.
pub fn attend(
    shape: &AttentionShape,
    q: &[f32],
    positions: &[usize],
    keys: &[f16],
    values: &[f16],
    out: &mut [f32],
) {
    let d = shape.head_dim;
    let kv_dim = shape.kv_heads * d;
    let group = shape.heads / shape.kv_heads;
    out.par_chunks_mut(d).enumerate().for_each_init(
        || (Vec::new(), vec![0f32; d], vec![0f32; d]),
        |(scores, row, query), (index, out)| {
            let (token, head) = (index / shape.heads, index % shape.heads);
            let position = positions[token];
            let first = shape.window.map_or(0, |w| (position + 1).saturating_sub(w));
            // llama.cpp multiplies in f16 against an f16 cache: round the query the same way.
            for (r, &v) in query.iter_mut().zip(&q[index * d..(index + 1) * d]) {
                *r = f16::from_f32(v).to_f32();
            }
            let kv_offset = (head / group) * d;
            scores.clear();
            let mut max = f32::NEG_INFINITY;
            for j in first..=position {
                let key = &keys[j * kv_dim + kv_offset..j * kv_dim + kv_offset + d];
                key.convert_to_f32_slice(row);
                let s = dot(query, row) * shape.scale;
                max = max.max(s);
                scores.push(s);
            }
            let mut total = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            out.fill(0.0);
            for (j, p) in (first..=position).zip(scores.iter()) {
                let value = &values[j * kv_dim + kv_offset..j * kv_dim + kv_offset + d];
                value.convert_to_f32_slice(row);
                let weight = f16::from_f32(p / total).to_f32();
                for (o, v) in out.iter_mut().zip(row.iter()) {
                    *o += weight * v;
                }
            }
        },
    );
}

/// A dot product in 8 independent lanes, so the compiler vectorizes it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            lanes[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halves(values: &[f32]) -> Vec<f16> {
        values.iter().map(|&v| f16::from_f32(v)).collect()
    }

    /// One head, one key: the output is that value whatever the scores.
    #[test]
    fn single_position_returns_its_value() {
        let shape = AttentionShape {
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            scale: 0.5,
            window: None,
        };
        let q = vec![1.0; 8];
        let keys = halves(&[0.3; 4]);
        let values = halves(&[1.0, 2.0, 3.0, 4.0]);
        let mut out = vec![0.0; 8];
        attend(&shape, &q, &[0], &keys, &values, &mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
    }

    /// Equal scores average the values in the window, and only those.
    #[test]
    fn window_limits_the_positions_attended() {
        let shape = AttentionShape {
            heads: 1,
            kv_heads: 1,
            head_dim: 1,
            scale: 1.0,
            window: Some(2),
        };
        let keys = halves(&[0.0; 4]);
        let values = halves(&[10.0, 20.0, 30.0, 40.0]);
        let mut out = vec![0.0; 1];
        attend(&shape, &[1.0], &[3], &keys, &values, &mut out);
        assert!((out[0] - 35.0).abs() < 1e-5);
        let full = AttentionShape {
            window: None,
            ..shape
        };
        attend(&full, &[1.0], &[3], &keys, &values, &mut out);
        assert!((out[0] - 25.0).abs() < 1e-5);
    }
}
