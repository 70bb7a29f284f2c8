//! No zero-shot answer depends on what other requests did to the shared label cache: clients
//! churning thousands of distinct labels through a small cache, beside ordinary requests, get
//! no 5xx, and probe requests answer during the churn what they answer alone.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A label no other request uses, unless `i` repeats.
fn label(client: usize, i: usize) -> String {
    const TOPICS: &[&str] = &[
        "finance", "travel", "sports", "cooking", "music", "weather", "law", "health",
    ];
    format!("{} case {client}-{i}", TOPICS[i % TOPICS.len()])
}

fn zero_shot(text: &str, labels: &[String]) -> Value {
    json!({"inputs": text, "task": "zero-shot", "parameters": {"labels": labels}})
}

/// The probes: fixed texts, each with labels shared with the churn (so their cache entries
/// are evicted and recomputed under them) and labels of their own.
fn probes() -> Vec<Value> {
    let texts = [
        "The central bank raised interest rates again this quarter.",
        "We hiked along the ridge and camped by the lake.",
        "Preheat the oven and whisk the eggs with sugar.",
    ];
    texts
        .iter()
        .enumerate()
        .map(|(p, text)| {
            let mut labels: Vec<String> = (0..6).map(|i| label(0, i + p)).collect();
            labels.extend(["finance", "travel", "cooking"].map(String::from));
            zero_shot(text, &labels)
        })
        .collect()
}

/// Label -> score of one zero-shot output.
fn scores(output: &Value) -> HashMap<String, f64> {
    let labels = output["labels"].as_array().expect("labels");
    let scores = output["scores"].as_array().expect("scores");
    labels
        .iter()
        .zip(scores)
        .map(|(l, s)| {
            (
                l.as_str().expect("label").to_string(),
                s.as_f64().expect("score"),
            )
        })
        .collect()
}

fn assert_same(alone: &Value, churned: &Value) {
    let (a, b) = (scores(&alone["outputs"][0]), scores(&churned["outputs"][0]));
    assert_eq!(a.len(), b.len(), "{alone} vs {churned}");
    for (label, score) in &a {
        let other = b
            .get(label)
            .unwrap_or_else(|| panic!("{label} missing: {churned}"));
        assert!(
            (score - other).abs() < 1e-3,
            "{label}: {score} alone, {other} during churn"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_shot_answers_never_depend_on_other_requests() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    // A cache far smaller than the labels in play: entries are evicted all the time.
    config.label_cache_entries = 200;
    let server = TestServer::start(config).await;

    let probes = probes();
    let mut alone = Vec::new();
    for probe in &probes {
        let (status, body) = server.predict(probe.clone()).await;
        assert_eq!(status, 200, "{body}");
        alone.push(body);
    }

    let until = Instant::now() + Duration::from_secs(20);
    let mut tasks = Vec::new();
    // Churners: 48 fresh labels per request, thousands in all.
    for client in 1..=4 {
        let (client_http, url) = (server.client.clone(), format!("{}/predict", server.url));
        tasks.push(tokio::spawn(async move {
            let (mut statuses, mut labels_sent) = (Vec::new(), 0);
            let mut i = 0;
            while Instant::now() < until && i < 100_000 {
                let labels: Vec<String> = (i..i + 48).map(|j| label(client, j)).collect();
                i += 48;
                labels_sent += labels.len();
                let r = client_http
                    .post(&url)
                    .json(&zero_shot("Quarterly results beat expectations.", &labels))
                    .send()
                    .await
                    .expect("request");
                let status = r.status().as_u16();
                let body: Value = r.json().await.expect("JSON");
                if status == 200 {
                    assert_eq!(scores(&body["outputs"][0]).len(), 48, "{body}");
                }
                statuses.push(status);
            }
            (statuses, labels_sent, Vec::new())
        }));
    }
    // Ordinary clients: embeddings, and the probes again, compared with their answers alone.
    for client in 0..2 {
        let (http, url) = (server.client.clone(), server.url.clone());
        let probes = probes.clone();
        tasks.push(tokio::spawn(async move {
            let (mut statuses, mut answers) = (Vec::new(), Vec::new());
            let mut i = 0;
            while Instant::now() < until {
                let (path, body) = if client == 0 && i % 2 == 0 {
                    (
                        "/v1/embeddings",
                        json!({"input": [format!("ordinary request {i}")]}),
                    )
                } else {
                    ("/predict", probes[i % probes.len()].clone())
                };
                let r = http
                    .post(format!("{url}{path}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = r.status().as_u16();
                let answer: Value = r.json().await.expect("JSON");
                if path == "/predict" && status == 200 {
                    answers.push((i % probes.len(), answer));
                }
                statuses.push(status);
                i += 1;
            }
            (statuses, 0, answers)
        }));
    }

    let (mut total, mut errors, mut labels_sent, mut compared) = (0, 0, 0, 0);
    let mut statuses_seen: HashMap<u16, usize> = HashMap::new();
    for task in tasks {
        let (statuses, labels, answers) = task.await.expect("client");
        for status in &statuses {
            *statuses_seen.entry(*status).or_default() += 1;
            errors += usize::from(*status >= 500);
        }
        total += statuses.len();
        labels_sent += labels;
        for (probe, answer) in answers {
            assert_same(&alone[probe], &answer);
            compared += 1;
        }
    }
    eprintln!(
        "{total} requests, {labels_sent} churned labels, {compared} probes compared: \
         {statuses_seen:?}"
    );
    assert_eq!(errors, 0, "5xx answers: {statuses_seen:?}");
    assert!(labels_sent >= 2_000, "only {labels_sent} labels churned");
    assert!(compared >= 20, "only {compared} probes compared");
    let metrics = server.metrics().await;
    assert_eq!(
        metric_value(&metrics, "wick_request_failures_total{reason=\"internal\"}"),
        Some(0.0)
    );
    server.stop().await.expect("clean stop");
}
