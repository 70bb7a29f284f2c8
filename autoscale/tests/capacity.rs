//! The capacity tool against a real wick (the release binary, started on 127.0.0.1): two short
//! steps of the embedding model, every signal read from wick's real `/metrics`, and the files
//! a measurement leaves. Needs `cargo build --release --bin wick` and `models/fetch
//! all-minilm-l6-v2` (scripts/test does both).

use std::path::PathBuf;

use wick_autoscale::curve::Curve;
use wick_autoscale::load::server::{default_binary, Launch};
use wick_autoscale::load::workload::Workload;
use wick_autoscale::measure::{self, Plan};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measures_a_real_wick_and_writes_its_curve() {
    let model = workspace().join("models/all-minilm-l6-v2");
    assert!(
        model.join(".complete").is_file(),
        "run `models/fetch all-minilm-l6-v2` first"
    );
    let out = std::env::temp_dir().join(format!("wick-capacity-{}", std::process::id()));
    let plan = Plan {
        name: "minilm".into(),
        model_label: "all-minilm-l6-v2".into(),
        workload: Workload::Embeddings { openai: false },
        launch: Some(Launch {
            binary: default_binary(&workspace()),
            model,
            metrics_window_s: 3,
            extra_args: vec!["--saturation-knee".into(), "8".into()],
        }),
        url: None,
        concurrency: vec![1, 8],
        step_s: 3.0,
        ready_runs: 2,
        saturation_knee: 8.0,
        out_dir: out.clone(),
    };
    let (curve, summary) = measure::run(&plan).await.expect("measurement");
    let _ = std::fs::remove_dir_all(&out);

    assert_eq!(curve.points.len(), 2);
    for p in &curve.points {
        assert!(p.throughput_rps > 1.0, "{p:?}");
        assert_eq!(p.errors, 0.0, "{p:?}");
        assert!(
            p.latency.p50 > 0.0 && p.latency.p50 <= p.latency.p99,
            "{p:?}"
        );
        assert!(p.cpu_cores > 0.0, "CPU from /proc: {p:?}");
        // Every signal is read from wick's real exposition, so each name exists.
        assert!(p.saturation > 0.0, "wick_saturation: {p:?}");
        assert!(p.queue_depth >= 0.0, "wick_queue_depth: {p:?}");
        assert!(
            p.requests_per_second > 0.0,
            "wick_requests_per_second: {p:?}"
        );
        assert!(p.latency_p99_gauge_ms > 0.0, "wick_latency_seconds: {p:?}");
        assert!(p.ttft.p99.is_nan(), "no tokens for embeddings");
    }
    assert!(summary.time_to_ready_s > 0.0 && summary.time_to_ready_s < 60.0);
    assert_eq!(summary.time_to_ready_runs_s.len(), 2);
    assert!([1.0, 8.0].contains(&summary.knee_concurrency));
    assert_eq!(summary.saturation_knee, 8.0);
    // The CSV reads back as the same curve.
    let again = Curve::from_csv(&curve.to_csv()).expect("CSV");
    assert_eq!(again.points.len(), 2);
}
