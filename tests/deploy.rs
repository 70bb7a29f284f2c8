//! The shipped deployment assets agree with the server: the manifests render, every knob in
//! the ConfigMap is a real flag, the probe and scrape paths answer, every series the HPA and
//! the alerts use exists, and the image's health check command works.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use serde_json::json;

fn render() -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", "k8s"])
        .current_dir(root())
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Words made of `[A-Za-z0-9_]` that start with `prefix`.
fn names_with_prefix(text: &str, prefix: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_configmap_knob_is_a_real_flag() {
    let rendered = render();
    for kind in [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ] {
        assert!(
            rendered.contains(&format!("kind: {kind}")),
            "{kind} missing"
        );
    }
    let help = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--help"])
        .output()
        .expect("wick --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let configmap = std::fs::read_to_string(root().join("k8s/configmap.yaml")).unwrap();
    let knobs = names_with_prefix(&configmap, "WICK_");
    assert!(knobs.len() >= 8, "{knobs:?}");
    for knob in knobs {
        assert!(
            help.contains(&format!("[env: {knob}=")),
            "{knob} is not a wick flag"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_scrape_path_and_referenced_series_exist() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let (status, _) = server
        .predict(json!({"inputs": "traffic for every series"}))
        .await;
    assert_eq!(status, 200);
    let rendered = render();
    for path in ["/ready", "/health", "/metrics"] {
        assert!(rendered.contains(path), "{path} not used by the manifests");
        let r = server.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let metrics = server.metrics().await;
    let exported = names_with_prefix(&metrics, "wick_");
    for file in ["k8s/hpa.yaml", "k8s/prometheusrule.yaml"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for series in names_with_prefix(&text, "wick_") {
            assert!(
                exported.contains(&series),
                "{file} uses {series}, which wick does not export"
            );
        }
    }

    // The Dockerfile's HEALTHCHECK command.
    let probe = |path: &str| {
        Command::new(env!("CARGO_BIN_EXE_wick"))
            .args(["probe", &format!("{}{path}", server.url)])
            .status()
            .expect("wick probe")
            .code()
    };
    assert_eq!(probe("/health"), Some(0));
    assert_eq!(probe("/no-such-route"), Some(1));
    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    assert!(dockerfile.contains(r#"CMD ["wick", "probe", "http://127.0.0.1:8080/health"]"#));
    server.stop().await.unwrap();
}
