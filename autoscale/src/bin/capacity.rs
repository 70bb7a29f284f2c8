//! `capacity`: measures one wick pod's capacity curve on loopback.
//!
//!   cargo run --release -p wick-autoscale --bin capacity -- --model models/all-minilm-l6-v2
//!   cargo run --release -p wick-autoscale --bin capacity -- --model models/smollm2-135m-instruct
//!
//! Starts target/release/wick (or `--wick`, or measures `--url`), times process start to
//! `/ready` 200, then drives it at each `--concurrency` for `--step-seconds` and writes
//! NAME.csv, NAME.json and NAME.png under `--out`. Every step is bounded in time; the run stops
//! the server it started.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use wick_autoscale::curve::Curve;
use wick_autoscale::load::server::{default_binary, Launch};
use wick_autoscale::load::workload::Workload;
use wick_autoscale::measure::{self, Plan};

#[derive(Parser, Debug)]
#[command(about = "Measure one wick pod's capacity curve")]
struct Args {
    /// Model directory wick serves; a directory with a .gguf file is measured as chat.
    #[arg(long, env = "WICK_MODEL", default_value = "models/all-minilm-l6-v2")]
    model: PathBuf,
    /// Measure a running server instead of starting one (no CPU or time-to-ready then).
    #[arg(long)]
    url: Option<String>,
    /// The wick binary to start (default: $CARGO_TARGET_DIR or target/, release/wick).
    #[arg(long)]
    wick: Option<PathBuf>,
    /// Comma-separated closed-loop concurrencies (default: 1..128 for embeddings, 1..24 chat).
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Seconds per step (default 15 for embeddings, 45 for chat).
    #[arg(long)]
    step_seconds: Option<f64>,
    /// Tokens each chat stream generates.
    #[arg(long, default_value_t = 64)]
    max_tokens: u64,
    /// Use /v1/embeddings instead of /predict.
    #[arg(long)]
    openai: bool,
    /// How many times to start wick to time process start -> ready (the last one is measured).
    #[arg(long, default_value_t = 3)]
    ready_runs: usize,
    /// `--saturation-knee` for wick: pending inputs (chat: sequences) at saturation 1.0.
    #[arg(long, default_value_t = 32)]
    saturation_knee: u32,
    /// Directory for NAME.csv, NAME.json, NAME.png.
    #[arg(long, default_value = "autoscale/results")]
    out: PathBuf,
    /// File name stem (default: the model directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Only redraw NAME.png from an earlier run's NAME.csv and NAME.json.
    #[arg(long)]
    plot_only: bool,
}

fn is_chat(model: &std::path::Path) -> bool {
    std::fs::read_dir(model).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "gguf"))
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let chat = is_chat(&args.model);
    let label = args
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let step_s = args.step_seconds.unwrap_or(if chat { 45.0 } else { 15.0 });
    let concurrency = if !args.concurrency.is_empty() {
        args.concurrency.clone()
    } else if chat {
        vec![1, 2, 4, 8, 12, 16, 24]
    } else {
        vec![1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128]
    };
    if args.plot_only {
        let base = args
            .out
            .join(args.name.clone().unwrap_or_else(|| label.clone()));
        let curve = Curve::load(&base.with_extension("csv"))?;
        let summary = measure::read_summary(&base.with_extension("json"))?;
        return measure::plot_curve(&base.with_extension("png"), &curve, &summary);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let launch = args.url.is_none().then(|| Launch {
        binary: args
            .wick
            .clone()
            .unwrap_or_else(|| default_binary(&workspace)),
        model: args.model.clone(),
        metrics_window_s: step_s.round().max(1.0) as u64,
        extra_args: vec!["--saturation-knee".into(), args.saturation_knee.to_string()],
    });
    let plan = Plan {
        name: args.name.clone().unwrap_or_else(|| label.clone()),
        model_label: label,
        workload: if chat {
            Workload::Chat {
                max_tokens: args.max_tokens,
            }
        } else {
            Workload::Embeddings {
                openai: args.openai,
            }
        },
        launch,
        url: args.url.clone(),
        concurrency,
        step_s,
        ready_runs: args.ready_runs,
        saturation_knee: f64::from(args.saturation_knee),
        out_dir: args.out.clone(),
    };
    let (_, summary) = measure::run(&plan).await?;
    println!(
        "time to ready {:.3} s (median of {:?}); knee at concurrency {} ({:.1} req/s, P99 {:.1} ms); max {:.1} req/s",
        summary.time_to_ready_s,
        summary.time_to_ready_runs_s,
        summary.knee_concurrency,
        summary.knee_throughput_rps,
        summary.knee_p99_ms,
        summary.max_throughput_rps
    );
    Ok(())
}
