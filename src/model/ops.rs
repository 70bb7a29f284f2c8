//! candle custom ops wrapping the fused CPU kernels of [`super::kernels`], so the encoder's
//! forward pass stays a chain of candle tensors (matmuls run in candle) while the elementwise
//! steps run fused. Each op takes contiguous f32 input, as the matmuls before them produce.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, InplaceOp1, Layout, Result, Shape, Tensor,
};

use super::kernels::{self, LayerNormParams};
use super::packed_attention::{self, Heads};
use super::sgemm;

fn contiguous_f32_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: only f32 is supported");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: only f32 is supported");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// `gelu(x + bias)` over the last dimension, in place.
pub struct BiasGelu<'a> {
    pub bias: &'a [f32],
}

impl InplaceOp1 for BiasGelu<'_> {
    fn name(&self) -> &'static str {
        "bias-gelu"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        if layout.dims().last() != Some(&self.bias.len()) {
            bail!("bias-gelu: bias does not match the last dimension");
        }
        let x = contiguous_f32_mut(storage, layout, self.name())?;
        kernels::bias_gelu(x, self.bias);
        Ok(())
    }
}

/// `LayerNorm(x + bias + residual)` over the last dimension.
pub struct AddLayerNorm<'a> {
    pub bias: Option<&'a [f32]>,
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

impl CustomOp2 for AddLayerNorm<'_> {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let residual = contiguous_f32(s2, l2, self.name())?;
        if l1.shape() != l2.shape() || l1.dims().last() != Some(&self.gamma.len()) {
            bail!("add-layer-norm: shapes do not match");
        }
        let ln = LayerNormParams {
            gamma: self.gamma,
            beta: self.beta,
            eps: self.eps,
        };
        let out = kernels::add_layer_norm(x, residual, self.bias, &ln);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `x (rows, in) · W` with `W` packed at load ([`super::sgemm`]).
pub struct PackedMatMul<'a> {
    pub weight: &'a sgemm::PackedMatrix,
}

impl CustomOp1 for PackedMatMul<'_> {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let inputs = self.weight.inputs();
        if layout.dims().last() != Some(&inputs) {
            bail!("packed-matmul: input width does not match the weight");
        }
        let rows = x.len() / inputs;
        let out = sgemm::matmul_to_vec(x, rows, self.weight);
        Ok((
            CpuStorage::F32(out),
            Shape::from((rows, self.weight.outputs())),
        ))
    }
}

/// Self-attention of packed sequences from their fused QKV projection `(tokens, 3 * hidden)`
/// to the context `(tokens, hidden)` ([`super::packed_attention`]).
pub struct PackedAttention<'a> {
    pub bias: &'a [f32],
    pub offsets: &'a [usize],
    pub heads: Heads,
    pub q_scale: f32,
}

impl CustomOp1 for PackedAttention<'_> {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(storage, layout, self.name())?;
        let hidden = self.heads.count * self.heads.dim;
        let tokens = self.offsets.last().copied().unwrap_or(0);
        if qkv.len() != tokens * 3 * hidden || self.bias.len() != 3 * hidden {
            bail!("packed-attention: shapes do not match");
        }
        let out =
            packed_attention::attention(qkv, self.bias, self.offsets, self.heads, self.q_scale);
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }
}

/// Applies a one-input op to `x`, after making it contiguous.
pub fn apply1(x: &Tensor, op: &impl CustomOp1) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(op)
}

/// Applies an in-place op to `x`, which must be contiguous and not shared (a fresh matmul
/// output), and returns it.
pub fn apply_inplace(x: Tensor, op: &impl InplaceOp1) -> Result<Tensor> {
    if !x.is_contiguous() {
        bail!("{}: input must be contiguous", op.name());
    }
    x.inplace_op1(op)?;
    Ok(x)
}

/// Applies a two-input op to `a` and `b`, after making them contiguous.
pub fn apply2(a: &Tensor, b: &Tensor, op: &impl CustomOp2) -> Result<Tensor> {
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, op)
}
