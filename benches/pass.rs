//! One encoder forward pass of a fixed shape, run back to back, reported as its fastest and
//! its 20th-percentile time: for paired A/B rounds between two builds on a machine whose speed
//! moves with its neighbours, where criterion's mean moves as much as the change under test.
//! `cargo bench --bench pass -- LEN BATCH [PASSES]` (defaults 195 8 20); needs
//! `models/fetch all-minilm-l6-v2`. Prints `fastest_ms p20_ms median_ms mean_ms`.

use std::time::Instant;

mod encoder;

/// The allocator the server uses (src/main.rs), so the bench measures what production runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Passes run before timing starts (pool threads started, buffers allocated).
const WARMUP_PASSES: usize = 3;

fn main() {
    // `cargo bench` adds `--bench`; the shape is the positional arguments.
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().expect("LEN BATCH [PASSES] as whole numbers"))
        .collect();
    let at = |i: usize, default: usize| numbers.get(i).copied().unwrap_or(default);
    let (len, batch, passes) = (at(0, 195), at(1, 8), at(2, 20).max(1));

    let (model, filler) = encoder::minilm_and_filler();
    let ids = vec![filler; len];
    let types = vec![0u32; len];
    let sequences: Vec<(&[u32], &[u32])> = (0..batch)
        .map(|_| (ids.as_slice(), types.as_slice()))
        .collect();
    let pass = || model.encoder.forward(&sequences).expect("forward");
    for _ in 0..WARMUP_PASSES {
        pass();
    }
    let mut ms: Vec<f64> = (0..passes)
        .map(|_| {
            let started = Instant::now();
            pass();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "{:.3} {:.3} {:.3} {:.3}",
        ms[0],
        ms[ms.len() / 5],
        ms[ms.len() / 2],
        mean
    );
}
