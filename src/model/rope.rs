//! Rotary position embeddings applied in place, each token at its own position (sequences in a
//! batch sit at different positions, so there is no shared position range).

use multiversion::multiversion;

use super::decoder::RopeStyle;

pub struct Rope {
    /// `base^(-2/head_dim)`: each pair's frequency is the previous pair's times this.
    theta_scale: f32,
    /// Multiplies positions: `1 / scale` of linear RoPE scaling.
    freq_scale: f32,
    head_dim: usize,
    style: RopeStyle,
}

impl Rope {
    /// `scale` divides positions (linear RoPE scaling); 1.0 leaves them as they are.
    pub fn new(head_dim: usize, base: f32, scale: f32, style: RopeStyle) -> Self {
        Self {
            theta_scale: base.powf(-2.0 / head_dim as f32),
            freq_scale: 1.0 / scale,
            head_dim,
            style,
        }
    }

    /// cos and sin of every rotation angle at each position: computed once per forward pass
    /// and shared by every layer, queries and keys alike.
    pub fn angles(&self, positions: &[usize]) -> Angles {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        // In f32, each angle the previous one times `theta_scale`, as ggml computes them: the
        // rounding of a long product is part of what the reference's logits are.
        for &position in positions {
            let mut theta = position as f32;
            for _ in 0..half {
                let angle = self.freq_scale * theta;
                cos.push(angle.cos());
                sin.push(angle.sin());
                theta *= self.theta_scale;
            }
        }
        Angles { cos, sin }
    }

    /// Rotates `x` (one row of `heads` heads of `head_dim` per position of `angles`).
    pub fn apply(&self, x: &mut [f32], angles: &Angles, heads: usize) {
        rotate(x, angles, heads, self.head_dim, self.style);
    }
}

/// Compiled for FMA where the CPU has it: the rotation is two fused multiply-adds per pair.
#[multiversion(targets("x86_64+avx2+fma"))]
fn rotate(x: &mut [f32], angles: &Angles, heads: usize, d: usize, style: RopeStyle) {
    {
        let half = d / 2;
        let rows = x
            .chunks_mut(heads * d)
            .zip(angles.cos.chunks(half).zip(angles.sin.chunks(half)));
        for (row, (cos, sin)) in rows {
            for head in row.chunks_mut(d) {
                match style {
                    RopeStyle::Interleaved => {
                        for i in 0..half {
                            let (a, b) = (head[2 * i], head[2 * i + 1]);
                            // The reference's compiler fuses each line's first product.
                            head[2 * i] = a.mul_add(cos[i], -(b * sin[i]));
                            head[2 * i + 1] = a.mul_add(sin[i], b * cos[i]);
                        }
                    }
                    RopeStyle::Halves => {
                        for i in 0..half {
                            let (a, b) = (head[i], head[i + half]);
                            head[i] = a.mul_add(cos[i], -(b * sin[i]));
                            head[i + half] = a.mul_add(sin[i], b * cos[i]);
                        }
                    }
                }
            }
        }
    }
}

/// Per-position cos and sin tables (`positions x head_dim/2`).
pub struct Angles {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_norms_are_kept() {
        for style in [RopeStyle::Interleaved, RopeStyle::Halves] {
            let rope = Rope::new(8, 10_000.0, 1.0, style);
            let original: Vec<f32> = (0..16).map(|i| i as f32 * 0.25 - 1.0).collect();
            let mut x = original.clone();
            rope.apply(&mut x, &rope.angles(&[0]), 2);
            assert_eq!(x, original);
            rope.apply(&mut x, &rope.angles(&[37]), 2);
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
            assert!((norm(&x) - norm(&original)).abs() < 1e-3);
            assert_ne!(x, original);
        }
    }
}
