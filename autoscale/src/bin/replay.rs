//! `replay`: a traffic day through the Kubernetes HPA for each policy compared, against pods
//! that follow a measured capacity curve (from `capacity`).
//!
//!   cargo run --release -p wick-autoscale --bin replay -- --model all-minilm-l6-v2
//!   cargo run --release -p wick-autoscale --bin replay -- --model smollm2-135m-instruct
//!
//! Reads RESULTS/MODEL.csv and MODEL.json, writes RESULTS/replay-MODEL.md (the table) and
//! RESULTS/replay-MODEL.png (load, replicas and P99 over the day).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use wick_autoscale::curve::{Curve, Summary};
use wick_autoscale::measure::read_summary;
use wick_autoscale::report;
use wick_autoscale::sim::cluster::Startup;
use wick_autoscale::sim::pipeline::Timing;
use wick_autoscale::sim::policy::{compared, Shared};
use wick_autoscale::sim::replay::{run, Scenario};
use wick_autoscale::sim::traffic::{Day, Spike};

#[derive(Parser, Debug)]
#[command(about = "Replay a traffic day through the HPA for each policy")]
struct Args {
    /// Directory with MODEL.csv and MODEL.json; the replay's files go there too.
    #[arg(long, default_value = "autoscale/results")]
    results: PathBuf,
    /// The measured model (file stem in --results).
    #[arg(long, default_value = "all-minilm-l6-v2")]
    model: String,
    /// SLO on P99 latency (chat: time to first token), ms; default 2 x the knee's P99.
    #[arg(long)]
    slo_ms: Option<f64>,
    /// Chat: SLO on P99 inter-token latency, ms; default 2 x the knee's.
    #[arg(long)]
    itl_slo_ms: Option<f64>,
    #[arg(long, default_value_t = 2)]
    min_replicas: i32,
    #[arg(long, default_value_t = 40)]
    max_replicas: i32,
    /// Scale-up stabilization window, seconds.
    #[arg(long, default_value_t = 0)]
    scale_up_window: i32,
    /// Created -> Running: scheduling and container start, seconds.
    #[arg(long, default_value_t = 10.0)]
    schedule_seconds: f64,
    /// Process start -> ready, seconds (default: the measured median).
    #[arg(long)]
    time_to_ready: Option<f64>,
    /// Prometheus scrape interval, seconds.
    #[arg(long, default_value_t = 15)]
    scrape_interval: u64,
    /// The adapter's rate() window for counters, seconds.
    #[arg(long, default_value_t = 120)]
    rate_window: u64,
    /// metrics-server's resolution, seconds.
    #[arg(long, default_value_t = 15)]
    metric_resolution: u64,
    /// Chat: replay wick_saturation as if wick ran with this `--saturation-knee` (the
    /// measured sequences term rescaled; encoders' busy fraction cannot be, so it is ignored).
    #[arg(long)]
    saturation_knee: Option<f64>,
    /// CPU each pod requests, cores (k8s/deployment.yaml: 2); CPU utilization divides by it.
    #[arg(long, default_value_t = 2.0)]
    cpu_request: f64,
    /// Take as the CPU request the most CPU the measured pod used (for a measurement on a
    /// machine that could not give wick its whole request).
    #[arg(long)]
    cpu_request_measured: bool,
    /// Requests a pod admits before 429 (default: 1024 embeddings, 80 chat).
    #[arg(long)]
    max_pending: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    start_hour: f64,
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Per-second noise on the offered load (0.03 = +-3%).
    #[arg(long, default_value_t = 0.03)]
    noise: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// File stem of the outputs (default replay-MODEL).
    #[arg(long)]
    name: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let curve = Curve::load(&args.results.join(format!("{}.csv", args.model)))?;
    let summary = read_summary(&args.results.join(format!("{}.json", args.model)))?;
    let scenario = scenario(&args, &curve, &summary);
    let replays: Vec<_> = compared(&curve, scenario.chat)
        .iter()
        .map(|p| run(&scenario, p))
        .collect();
    let mut md = format!(
        "# Replay: {}

{}
",
        summary.model,
        describe(&args, &scenario)
    );
    md.push_str(&report::table(&replays));
    let winners: Vec<&str> = report::winners(&replays, "CPU 70%")
        .iter()
        .map(|r| r.policy.as_str())
        .collect();
    let _ = writeln!(
        md,
        "\nFewer or equal SLO minutes than CPU 70% at fewer pod-hours: {}.",
        if winners.is_empty() {
            "none".to_string()
        } else {
            winners.join(", ")
        }
    );
    let stem = args
        .name
        .clone()
        .unwrap_or_else(|| format!("replay-{}", args.model));
    let md_path = args.results.join(format!("{stem}.md"));
    std::fs::write(&md_path, &md)?;
    let png = args.results.join(format!("{stem}.png"));
    report::plot_day(&png, &summary.model, &scenario, &replays)?;
    print!("{md}");
    println!("wrote {} and {}", md_path.display(), png.display());
    Ok(())
}

/// The knee's P99 of the latency the SLO is on: request latency, or chat's time to first token.
fn knee_p99(curve: &Curve, chat: bool) -> f64 {
    let knee = curve.knee();
    if chat {
        knee.ttft.p99
    } else {
        knee.latency.p99
    }
}

fn scenario(args: &Args, curve: &Curve, summary: &Summary) -> Scenario {
    let chat = summary.kind == "chat";
    let knee = curve.knee();
    Scenario {
        curve: curve.clone(),
        chat,
        day: Day {
            knee_rps: knee.throughput_rps,
            spike: Some(Spike::AFTERNOON),
            noise: args.noise,
            seed: args.seed,
        },
        start_s: (args.start_hour * 3600.0) as u64,
        seconds: (args.hours * 3600.0) as u64,
        startup: Startup {
            schedule_s: args.schedule_seconds,
            time_to_ready_s: args.time_to_ready.unwrap_or(summary.time_to_ready_s),
            probe_period_s: 2.0,
            endpoints_delay_s: 1.0,
        },
        timing: Timing {
            scrape_interval_s: args.scrape_interval,
            rate_window_s: args.rate_window,
            metric_resolution_s: args.metric_resolution,
        },
        shared: Shared::shipped(args.min_replicas, args.max_replicas, args.scale_up_window),
        max_pending: args.max_pending.unwrap_or(if chat { 80.0 } else { 1024.0 }),
        saturation_knee: args
            .saturation_knee
            .filter(|_| chat)
            .unwrap_or(summary.saturation_knee),
        measured_saturation_knee: summary.saturation_knee,
        cpu_request_cores: if args.cpu_request_measured {
            let most = curve.points.iter().map(|p| p.cpu_cores).fold(0.0, f64::max);
            (most * 10.0).ceil() / 10.0
        } else {
            args.cpu_request
        },
        slo_ms: args.slo_ms.unwrap_or(2.0 * knee_p99(curve, chat)).round(),
        itl_slo_ms: chat.then(|| args.itl_slo_ms.unwrap_or((2.0 * knee.itl.p99).round())),
        sync_phase_s: 7,
    }
}

/// The paragraph above the table: what was replayed, against what.
fn describe(args: &Args, s: &Scenario) -> String {
    let knee = s.curve.knee();
    let unit = if s.chat { "streams" } else { "requests" };
    let latency = if s.chat {
        "time to first token"
    } else {
        "latency"
    };
    let itl = s
        .itl_slo_ms
        .map(|v| format!(" and inter-token P99 <= {v} ms"))
        .unwrap_or_default();
    let most_cpu = s
        .curve
        .points
        .iter()
        .map(|p| p.cpu_cores)
        .fold(0.0, f64::max);
    format!(
        "One pod's knee: concurrency {}, {:.2} {unit}/s, P99 {latency} {:.1} ms; time to ready \
         {:.2} s; wick_saturation knee setting {}. The day peaks at 10x the knee ({:.1} {unit}/s) \
         with a 3x flash spike at 15:00. SLO: P99 {latency} <= {} ms{itl}. HPA: min {}, max {}, \
         sync 15 s; scale-up +100% or +4 pods per 60 s (Max, window {} s), scale-down window \
         300 s, -20% per 60 s. Pipeline: scrape {} s, rate window {} s, metrics-server {} s; pods \
         Running {} s after creation; CPU request {} cores (the most the measured pod used: \
         {most_cpu:.2}).\n",
        knee.concurrency,
        knee.throughput_rps,
        knee_p99(&s.curve, s.chat),
        s.startup.time_to_ready_s,
        s.saturation_knee,
        10.0 * knee.throughput_rps,
        s.slo_ms,
        s.shared.min_replicas,
        s.shared.max_replicas,
        args.scale_up_window,
        s.timing.scrape_interval_s,
        s.timing.rate_window_s,
        s.timing.metric_resolution_s,
        s.startup.schedule_s,
        s.cpu_request_cores,
    )
}
