//! Criterion bench of the encoder's f32 matmul: wick's packed-weight kernel against candle's
//! matmul (the `gemm` crate) on all-MiniLM-L6-v2's projection shapes, at the row counts of one
//! short sentence (13), one paragraph (195) and eight paragraphs (1560), and with Strassen–Winograd
//! products at the last two. Throughput in FLOP.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wick::model::sgemm::{self, PackedMatrix};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm");
    group.sample_size(20);
    // (inputs, outputs): fused QKV, attention output, intermediate, output.
    for (inputs, outputs) in [(384, 1152), (384, 384), (384, 1536), (1536, 384)] {
        let out_in = values(outputs * inputs);
        let packed = PackedMatrix::from_out_in(&out_in, outputs, inputs);
        let in_out = Tensor::from_vec(out_in, (outputs, inputs), &Device::Cpu)
            .and_then(|w| w.t()?.contiguous())
            .expect("weight");
        for rows in [13usize, 195, 1560] {
            let x = values(rows * inputs);
            let xt = Tensor::from_vec(x.clone(), (rows, inputs), &Device::Cpu).expect("x");
            let mut out = vec![0f32; rows * outputs];
            let shape = format!("{rows}x{inputs}x{outputs}");
            group.throughput(Throughput::Elements((2 * rows * inputs * outputs) as u64));
            group.bench_with_input(BenchmarkId::new("wick", &shape), &rows, |b, &rows| {
                b.iter(|| sgemm::matmul(&x, rows, &packed, &mut out))
            });
            if rows >= 195 {
                let winograd =
                    PackedMatrix::from_out_in(&values(outputs * inputs), outputs, inputs)
                        .with_winograd();
                group.bench_with_input(
                    BenchmarkId::new("wick-winograd", &shape),
                    &rows,
                    |b, &rows| b.iter(|| sgemm::matmul(&x, rows, &winograd, &mut out)),
                );
            }
            group.bench_with_input(BenchmarkId::new("candle", &shape), &rows, |b, _| {
                b.iter(|| xt.matmul(&in_out).expect("matmul"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, matmul);
criterion_main!(benches);
