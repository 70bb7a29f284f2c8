//! Criterion bench of wick's quantised matrix products on the chat models' shapes: SmolLM2-135M's
//! MLP (Q4_1) and tied output projection (Q8_0, through the logits' summed kernel), and Gemma 3
//! 270M's MLP (Q5_0, and Q4_K or Q6_K) and output projection,
//! at the token counts of one decode step (1), batched decode (4, 8) and a prefill chunk (64).
//! Run inside a pool of the machine's threads, as the scheduler runs. Throughput in FLOP.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wick::model::quant::Linear;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn quantized(dtype: GgmlDType, outputs: usize, inputs: usize) -> Linear {
    let weights = Tensor::from_vec(values(outputs * inputs), (outputs, inputs), &Device::Cpu)
        .expect("weights");
    let tensor = QTensor::quantize(&weights, dtype).expect("quantize");
    Linear::new(tensor).expect("linear")
}

fn products(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    let mut group = c.benchmark_group("quant");
    group.sample_size(20);
    // (name, type, outputs, inputs)
    let shapes = [
        ("smollm2-up", GgmlDType::Q4_1, 1536, 576),
        ("smollm2-down", GgmlDType::Q4_1, 576, 1536),
        ("smollm2-output", GgmlDType::Q8_0, 49152, 576),
        ("gemma3-up", GgmlDType::Q5_0, 2048, 640),
        ("gemma3-output", GgmlDType::Q8_0, 262144, 640),
        ("gemma3-down", GgmlDType::Q4K, 640, 2048),
        ("gemma3-down", GgmlDType::Q6K, 640, 2048),
    ];
    for (name, dtype, outputs, inputs) in shapes {
        let linear = quantized(dtype, outputs, inputs);
        for tokens in [1usize, 4, 8, 64] {
            let x = values(tokens * inputs);
            group.throughput(Throughput::Elements((2 * tokens * inputs * outputs) as u64));
            let id = BenchmarkId::new(format!("{name}-{dtype:?}"), tokens);
            // The output projections run as the decoder runs them, with the logits' kernels.
            let product = if name.ends_with("output") {
                Linear::forward_logits
            } else {
                Linear::forward
            };
            group.bench_with_input(id, &tokens, |b, &tokens| {
                pool.install(|| b.iter(|| product(&linear, &x, tokens).expect("forward")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, products);
criterion_main!(benches);
