//! Criterion bench of one encoder forward pass on the default model (all-MiniLM-L6-v2):
//! batch 1, 8 and 32 x sequence length 16 and 128. Needs `models/fetch all-minilm-l6-v2`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

mod encoder;

/// The allocator the server uses (src/main.rs), so the bench measures what production runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn forward(c: &mut Criterion) {
    let (model, filler) = encoder::minilm_and_filler();
    let mut group = c.benchmark_group("forward");
    group.sample_size(20);
    for &len in &[16usize, 128] {
        for &batch in &[1usize, 8, 32] {
            let ids = vec![filler; len];
            let types = vec![0u32; len];
            let sequences: Vec<(&[u32], &[u32])> = (0..batch)
                .map(|_| (ids.as_slice(), types.as_slice()))
                .collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("seq{len}"), format!("batch{batch}")),
                &sequences,
                |b, sequences| b.iter(|| model.encoder.forward(sequences).expect("forward")),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
