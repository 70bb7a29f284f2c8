//! A whole capacity measurement: time-to-ready runs, the stepped load, and the files it leaves
//! (`NAME.csv`, `NAME.json`, `NAME.png`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::curve::{Curve, Point, Summary};
use crate::load::server::{Launch, Server};
use crate::load::step::{self, Target};
use crate::load::workload::Workload;
use crate::plot::{self, Panel, Series, PALETTE};

/// What to measure and where to write it.
pub struct Plan {
    pub name: String,
    pub model_label: String,
    pub workload: Workload,
    /// `None`: measure the server at `url` instead of starting one.
    pub launch: Option<Launch>,
    pub url: Option<String>,
    pub concurrency: Vec<usize>,
    pub step_s: f64,
    pub ready_runs: usize,
    pub saturation_knee: f64,
    pub out_dir: PathBuf,
}

/// Pause between steps, so one step's queue has drained before the next starts.
const SETTLE: Duration = Duration::from_secs(2);

pub async fn run(plan: &Plan) -> Result<(Curve, Summary)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let loadavg_before = loadavg();
    let (mut server, ready_runs) = start(plan, &client).await?;
    let target = Target {
        client: &client,
        url: &server.url.clone(),
        pid: server.pid(),
    };
    // One short unrecorded step, so lazily built state is not charged to the first point.
    step::run(&target, &plan.workload, 1, 2.0).await;
    let mut points = Vec::new();
    for &c in &plan.concurrency {
        tokio::time::sleep(SETTLE).await;
        let p = step::run(&target, &plan.workload, c, plan.step_s).await;
        println!("{}", describe(&p, plan.workload.is_chat()));
        points.push(p);
    }
    server.stop();
    let curve = Curve::new(points)?;
    let summary = summarise(plan, &curve, ready_runs, loadavg_before);
    write(plan, &curve, &summary)?;
    Ok((curve, summary))
}

/// Starts wick `ready_runs` times (keeping the last) and times each start to `/ready`.
async fn start(plan: &Plan, client: &reqwest::Client) -> Result<(Server, Vec<f64>)> {
    let Some(launch) = &plan.launch else {
        let url = plan
            .url
            .as_deref()
            .context("neither a binary nor a URL to measure")?;
        return Ok((Server::external(url), Vec::new()));
    };
    let mut runs = Vec::new();
    for i in 0..plan.ready_runs.max(1) {
        let (mut server, ready) = Server::start(launch, client).await?;
        runs.push(ready.as_secs_f64());
        println!("start {}: ready in {:.3} s", i + 1, ready.as_secs_f64());
        if i + 1 == plan.ready_runs.max(1) {
            return Ok((server, runs));
        }
        server.stop();
    }
    unreachable!("the loop returns on its last run")
}

fn summarise(plan: &Plan, curve: &Curve, ready: Vec<f64>, loadavg_before: f64) -> Summary {
    let knee = curve.knee();
    let mut sorted = ready.clone();
    sorted.sort_by(f64::total_cmp);
    Summary {
        model: plan.model_label.clone(),
        kind: if plan.workload.is_chat() {
            "chat"
        } else {
            "embeddings"
        }
        .into(),
        time_to_ready_s: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        time_to_ready_runs_s: ready,
        knee_concurrency: knee.concurrency,
        knee_throughput_rps: knee.throughput_rps,
        knee_p99_ms: if plan.workload.is_chat() {
            knee.ttft.p99
        } else {
            knee.latency.p99
        },
        max_throughput_rps: curve.max_throughput(),
        metrics_window_s: plan.step_s,
        step_s: plan.step_s,
        saturation_knee: plan.saturation_knee,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg_before,
    }
}

fn write(plan: &Plan, curve: &Curve, summary: &Summary) -> Result<()> {
    std::fs::create_dir_all(&plan.out_dir)?;
    let base = plan.out_dir.join(&plan.name);
    let csv = base.with_extension("csv");
    std::fs::write(&csv, curve.to_csv()).with_context(|| csv.display().to_string())?;
    let json = base.with_extension("json");
    std::fs::write(&json, serde_json::to_string_pretty(summary)? + "\n")?;
    plot_curve(&base.with_extension("png"), curve, summary)?;
    println!(
        "wrote {}, {}, {}",
        csv.display(),
        json.display(),
        base.with_extension("png").display()
    );
    Ok(())
}

/// Reads a summary written beside a CSV.
pub fn read_summary(path: &Path) -> Result<Summary> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

fn describe(p: &Point, chat: bool) -> String {
    let base = format!(
        "c={:<4} {:>8.1} req/s  p50 {:>8.1} ms  p90 {:>8.1} ms  p99 {:>8.1} ms  errors {:<3} cpu {:.2}  saturation {:.2}  queue {:.1}  rps {:.1}  p99 gauge {:.1} ms",
        p.concurrency, p.throughput_rps, p.latency.p50, p.latency.p90, p.latency.p99,
        p.errors, p.cpu_cores, p.saturation, p.queue_depth, p.requests_per_second,
        p.latency_p99_gauge_ms,
    );
    if !chat {
        return base;
    }
    format!(
        "{base}  ttft p99 {:.0} ms  itl p99 {:.1} ms  {:.1} tok/s  waiting {:.1}  running {:.1}  kv {:.3}",
        p.ttft.p99, p.itl.p99, p.tokens_per_s, p.sequences_waiting, p.sequences_running,
        p.kv_cache_usage,
    )
}

/// The 1-minute load average, NaN where `/proc/loadavg` is not readable.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn line(name: &str, color: usize, curve: &Curve, y: fn(&Point) -> f64) -> Series {
    Series {
        name: name.into(),
        points: curve.points.iter().map(|p| (p.concurrency, y(p))).collect(),
        color: PALETTE[color],
    }
}

/// Four panels over concurrency: throughput, latency, the autoscaling signals, and the
/// chat-only (or queue) signals; the knee marked on each.
pub fn plot_curve(path: &Path, curve: &Curve, summary: &Summary) -> Result<()> {
    let knee = Some((
        summary.knee_concurrency,
        format!("knee (c={})", summary.knee_concurrency),
    ));
    let panel = |title: &str, y_label: &str, series: Vec<Series>| Panel {
        title: format!("{}: {title}", summary.model),
        x_label: "concurrency (closed-loop clients)".into(),
        y_label: y_label.into(),
        series,
        vline: knee.clone(),
        hline: None,
    };
    let chat = summary.kind == "chat";
    let mut panels = vec![
        panel(
            "throughput",
            if chat { "streams/s" } else { "requests/s" },
            vec![line("throughput", 0, curve, |p| p.throughput_rps)],
        ),
        panel(
            if chat {
                "stream latency"
            } else {
                "request latency"
            },
            "ms",
            vec![
                line("P50", 2, curve, |p| p.latency.p50),
                line("P90", 4, curve, |p| p.latency.p90),
                line("P99", 1, curve, |p| p.latency.p99),
            ],
        ),
        panel(
            "per-pod signals",
            "value",
            vec![
                line("wick_saturation", 0, curve, |p| p.saturation),
                line("CPU cores", 1, curve, |p| p.cpu_cores),
                line("wick_queue_depth / 32", 2, curve, |p| p.queue_depth / 32.0),
            ],
        ),
    ];
    panels.push(if chat {
        panel(
            "tokens",
            "ms / count",
            vec![
                line("TTFT P99 / 100 (ms)", 1, curve, |p| p.ttft.p99 / 100.0),
                line("ITL P99 (ms)", 0, curve, |p| p.itl.p99),
                line("wick_sequences_waiting", 2, curve, |p| p.sequences_waiting),
                line("wick_kv_cache_usage_ratio x 100", 3, curve, |p| {
                    p.kv_cache_usage * 100.0
                }),
            ],
        )
    } else {
        panel(
            "wick's own window gauges",
            "value",
            vec![
                line("wick_requests_per_second", 0, curve, |p| {
                    p.requests_per_second
                }),
                line("wick_latency_seconds{0.99} (ms)", 1, curve, |p| {
                    p.latency_p99_gauge_ms
                }),
            ],
        )
    });
    plot::draw(path, &panels, 2, (640, 420))
}
