//! The shipped deployment assets agree with the server, in every kustomize overlay and every
//! Helm chart variant (scripts/render-deploy): each WICK_* knob is a real flag whose value wick
//! accepts; ports, probe paths, the pre-stop delay, the grace period and the proxy's limits fit
//! wick's listener, routes, drain and request limits; every series the HPAs, the Prometheus
//! Adapter rules, the KEDA queries and the alerts (and their tests) use is one wick exports; the
//! images' health check command works. scripts/check-deploy checks the manifests among
//! themselves and against their schemas.

mod common;
mod deploy_assets;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::*;
use deploy_assets::*;
use serde_json::{json, Value};

#[test]
fn every_knob_is_a_wick_flag_whose_value_wick_accepts() {
    let flags = wick_flags();
    for render in renders() {
        let env = render.wick_env();
        assert!(env.len() >= 8, "{}: {env:?}", render.name);
        for knob in env.keys().filter(|k| k.starts_with("WICK_")) {
            assert!(
                flags.contains_key(knob),
                "{}: {knob} is not a wick flag",
                render.name
            );
        }
        assert_wick_accepts(&render.name, &env);
    }
}

/// Starts the real binary with exactly this environment (its own listener on loopback, a model
/// path that does not exist): wick must parse and validate every value — it logs `starting`
/// after that — and then stop at the missing model.
fn assert_wick_accepts(render: &str, env: &BTreeMap<String, String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wick"));
    command.arg("serve").env_clear();
    for (key, value) in env.iter().filter(|(k, _)| *k != "WICK_API_KEY") {
        command.env(key, value);
    }
    let out = command
        .env("WICK_MODEL", "/nonexistent/model")
        .env("WICK_HOST", "127.0.0.1")
        .env("WICK_PORT", "0")
        .env("WICK_LOG_FORMAT", "json")
        .output()
        .expect("wick runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if env
        .get("WICK_DEVICE")
        .is_some_and(|d| d.starts_with("cuda"))
    {
        // This CPU build refuses CUDA by design, after the value parsed.
        assert!(
            text.contains("built without CUDA"),
            "{render}: WICK_DEVICE: {text}"
        );
        return;
    }
    assert!(
        text.contains(r#""message":"starting""#) && text.contains("model directory does not exist"),
        "{render}: wick rejected its environment:\n{text}"
    );
}

#[test]
fn ports_probes_drain_and_proxy_agree_with_wick() {
    let flags = wick_flags();
    for render in renders() {
        let name = &render.name;
        let env = render.wick_env();
        let container = render.wick_container();
        let port = effective(&env, &flags, "WICK_PORT");
        assert_eq!(
            port, "8080",
            "{name}: the manifests assume wick's default port"
        );
        let http = container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == "http")
            .unwrap_or_else(|| panic!("{name}: no port named http"));
        assert_eq!(http["containerPort"].to_string(), port, "{name}");

        let pod = &render.deployment()["spec"]["template"];
        let annotations = &pod["metadata"]["annotations"];
        if annotations["prometheus.io/scrape"] == "true" {
            assert_eq!(annotations["prometheus.io/port"], port.as_str(), "{name}");
            assert_eq!(annotations["prometheus.io/path"], "/metrics", "{name}");
        }
        for service in render.of_kind("Service") {
            for p in service["spec"]["ports"].as_array().expect("ports") {
                assert_eq!(p["targetPort"], "http", "{name}: Service target port");
            }
        }
        for monitor in render.of_kind("ServiceMonitor") {
            let endpoint = &monitor["spec"]["endpoints"][0];
            assert_eq!(endpoint["port"], "http", "{name}");
            assert_eq!(endpoint["path"], "/metrics", "{name}");
        }

        check_probes(name, container);
        check_shutdown(name, &env, &flags, pod, container);
        for ingress in render.of_kind("Ingress") {
            check_proxy(name, &env, &flags, ingress);
        }
    }
}

/// Startup and readiness on /ready (503 while loading, warming, draining), liveness on /health
/// (never waits behind inference; on /ready a draining pod would be killed mid-drain).
fn check_probes(name: &str, container: &Value) {
    for (probe, path) in [
        ("startupProbe", "/ready"),
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/health"),
    ] {
        let p = &container[probe];
        assert_eq!(p["httpGet"]["path"], path, "{name}: {probe}");
        assert_eq!(p["httpGet"]["port"], "http", "{name}: {probe}");
    }
    let startup = &container["startupProbe"];
    let budget = startup["periodSeconds"].as_f64().expect("period")
        * startup["failureThreshold"].as_f64().expect("threshold");
    assert!(
        budget >= 60.0,
        "{name}: startup probe allows only {budget} s for load + warmup"
    );
    assert_eq!(container["readinessProbe"]["failureThreshold"], 1, "{name}");
}

/// SIGTERM: readiness fails at once and wick keeps serving for the pre-stop delay, long enough
/// for the failed readiness probe to take the pod out of the Service; then it drains in-flight
/// work; the kubelet's SIGKILL must come after both. No preStop hook is needed (the delay is
/// wick's own), and an in-flight request's deadline fits the drain.
fn check_shutdown(
    name: &str,
    env: &BTreeMap<String, String>,
    flags: &BTreeMap<String, Option<String>>,
    pod: &Value,
    container: &Value,
) {
    let pre_stop = seconds(&effective(env, flags, "WICK_PRE_STOP_DELAY"));
    let drain = seconds(&effective(env, flags, "WICK_DRAIN_TIMEOUT"));
    let request_timeout = seconds(&effective(env, flags, "WICK_REQUEST_TIMEOUT"));
    let readiness = &container["readinessProbe"];
    let unready_after = readiness["periodSeconds"].as_f64().expect("period")
        * readiness["failureThreshold"].as_f64().expect("threshold");
    assert!(
        pre_stop >= unready_after + 2.0,
        "{name}: pre-stop delay {pre_stop} s does not outlast readiness failing ({unready_after} s) \
         and endpoint removal"
    );
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap_or(30.0);
    assert!(
        grace >= pre_stop + drain + 5.0,
        "{name}: grace period {grace} s < pre-stop {pre_stop} + drain {drain} + 5"
    );
    assert!(
        drain >= request_timeout,
        "{name}: drain {drain} s cuts requests with a {request_timeout} s deadline"
    );
    assert!(
        container["lifecycle"].is_null(),
        "{name}: a preStop hook would add to wick's own delay"
    );
}

/// The ingress proxy lets through every body wick accepts and waits as long as a generation may
/// take, without buffering streams.
fn check_proxy(
    name: &str,
    env: &BTreeMap<String, String>,
    flags: &BTreeMap<String, Option<String>>,
    ingress: &Value,
) {
    let annotation = |key: &str| -> String {
        ingress["metadata"]["annotations"][format!("nginx.ingress.kubernetes.io/{key}")]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: Ingress has no {key}"))
            .to_string()
    };
    let body = annotation("proxy-body-size");
    let body_bytes: f64 = match body.strip_suffix('m') {
        Some(mib) => mib.parse::<f64>().expect("size") * 1024.0 * 1024.0,
        None => body.parse().expect("size"),
    };
    let max_body = seconds(&effective(env, flags, "WICK_MAX_BODY_BYTES"));
    assert!(
        body_bytes >= max_body,
        "{name}: proxy body limit {body} < wick's {max_body}"
    );
    let generation = seconds(&effective(env, flags, "WICK_GENERATION_TIMEOUT"));
    let request = seconds(&effective(env, flags, "WICK_REQUEST_TIMEOUT"));
    for key in ["proxy-read-timeout", "proxy-send-timeout"] {
        let timeout = seconds(&annotation(key));
        assert!(
            timeout > generation.max(request),
            "{name}: {key} {timeout} s would cut a {generation} s generation"
        );
    }
    assert_eq!(annotation("proxy-buffering"), "off", "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_paths_answer_and_every_referenced_series_is_exported() {
    let encoder = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let chat = TestServer::start(quick_config(real_model("smollm2-135m-instruct"))).await;
    let (status, _) = encoder
        .predict(json!({"inputs": "traffic for every series"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = chat
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
        )
        .await;
    assert_eq!(status, 200);

    let renders = renders();
    let mut paths = BTreeSet::new();
    for render in &renders {
        let container = render.wick_container();
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            paths.insert(
                container[probe]["httpGet"]["path"]
                    .as_str()
                    .expect("path")
                    .to_string(),
            );
        }
        for monitor in render.of_kind("ServiceMonitor") {
            paths.insert(
                monitor["spec"]["endpoints"][0]["path"]
                    .as_str()
                    .expect("path")
                    .into(),
            );
        }
    }
    for server in [&encoder, &chat] {
        for path in &paths {
            assert_eq!(server.get(path).await.status(), 200, "{path}");
        }
    }

    let mut exported = names_with_prefix(&encoder.metrics().await, "wick_");
    exported.extend(names_with_prefix(&chat.metrics().await, "wick_"));
    for series in [
        "wick_saturation",
        "wick_time_to_first_token_seconds_bucket",
        "wick_sequences_waiting",
        "wick_kv_cache_usage_ratio",
    ] {
        assert!(exported.contains(series), "{series} not exported");
    }
    check_series_used(&renders, &exported);

    // The images' HEALTHCHECK command, against a real server.
    let probe = |path: &str| {
        Command::new(env!("CARGO_BIN_EXE_wick"))
            .args(["probe", &format!("{}{path}", encoder.url)])
            .status()
            .expect("wick probe")
            .code()
    };
    assert_eq!(probe("/health"), Some(0));
    assert_eq!(probe("/no-such-route"), Some(1));
    for dockerfile in dockerfiles() {
        let text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
        assert!(
            text.contains(r#"CMD ["wick", "probe", "http://127.0.0.1:8080/health"]"#)
                && text.contains("WICK_PORT=8080"),
            "{}: HEALTHCHECK does not probe wick's /health on its port",
            dockerfile.display()
        );
    }
    encoder.stop().await.unwrap();
    chat.stop().await.unwrap();
}

/// Every wick_* name in the autoscalers, the adapter rules, the KEDA queries, the alerts and the
/// alerts' and queries' tests is a series wick exports, or a name the adapter rules expose.
fn check_series_used(renders: &[deploy_assets::Render], exported: &BTreeSet<String>) {
    let adapter = read("k8s/autoscaling/prometheus-adapter-values.yaml");
    let adapter_names: BTreeSet<String> = adapter
        .lines()
        .filter_map(|l| l.trim().strip_prefix("as: "))
        .map(str::to_string)
        .collect();
    assert!(
        adapter_names.contains("wick_saturation"),
        "{adapter_names:?}"
    );
    for name in &adapter_names {
        assert!(name.starts_with("wick_"), "adapter exposes {name}");
    }
    let known = |name: &String| exported.contains(name) || adapter_names.contains(name);

    let mut sources: Vec<(String, String)> = Vec::new();
    for render in renders {
        for kind in ["HorizontalPodAutoscaler", "ScaledObject", "PrometheusRule"] {
            for object in render.of_kind(kind) {
                sources.push((
                    format!("{} {kind}", render.name),
                    object["spec"].to_string(),
                ));
            }
        }
        for hpa in render.of_kind("HorizontalPodAutoscaler") {
            for metric in hpa["spec"]["metrics"].as_array().expect("metrics") {
                if metric["type"] == "Pods" {
                    let used = metric["pods"]["metric"]["name"].as_str().expect("name");
                    assert!(
                        adapter_names.contains(used),
                        "{}: the HPA reads {used}, which the adapter rules do not expose",
                        render.name
                    );
                }
            }
        }
    }
    for file in [
        "k8s/autoscaling/prometheus-adapter-values.yaml",
        "k8s/helm/wick/files/prometheus-rules.yaml",
        "k8s/alerts/alerts.test.yaml",
        "scripts/check_deploy.py",
    ] {
        sources.push((file.to_string(), read(file)));
    }
    for (source, text) in &sources {
        for series in names_with_prefix(text, "wick_") {
            assert!(
                known(&series),
                "{source} uses {series}, which wick does not export"
            );
        }
    }
    let rules: Value = renders
        .iter()
        .find(|r| r.name == "kustomize-prod")
        .and_then(|r| {
            r.of_kind("PrometheusRule")
                .first()
                .map(|o| o["spec"].clone())
        })
        .expect("prod PrometheusRule");
    assert!(rules
        .to_string()
        .contains("wick_time_to_first_token_seconds_bucket"));
}
