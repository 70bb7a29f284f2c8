//! `--device`: the device in use is shown in `/info` and `wick_build_info`, and a device this
//! build or this model cannot use stops start-up with an error that names the flag.

mod common;

use std::process::Command;

use common::*;
use wick::device::DeviceChoice;

/// Runs `wick serve` to completion and returns its exit success and stderr.
fn serve_and_exit(model: &str, device: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--model"])
        .arg(real_model(model))
        .args(["--host", "127.0.0.1", "--port", "0", "--device", device])
        .args(["--log-format", "text"])
        .output()
        .expect("run wick");
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_in_use_is_in_info_and_build_info() {
    for (model, device) in [
        ("all-minilm-l6-v2", DeviceChoice::Cpu),
        ("smollm2-135m-instruct", DeviceChoice::Auto),
    ] {
        let mut config = quick_config(real_model(model));
        config.device = device;
        let server = TestServer::start(config).await;
        let info: serde_json::Value = server.get("/info").await.json().await.unwrap();
        assert_eq!(info["device"], "cpu", "{model}: {info}");
        let metrics = server.metrics().await;
        let build_info = metrics
            .lines()
            .find(|l| l.starts_with("wick_build_info{"))
            .expect("wick_build_info");
        assert!(build_info.contains("device=\"cpu\""), "{build_info}");
        server.stop().await.unwrap();
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_cuda_without_it_is_a_start_up_error() {
    let (ok, log) = serve_and_exit("all-minilm-l6-v2", "cuda:1");
    assert!(!ok, "{log}");
    assert!(log.contains("--device cuda:1"), "{log}");
    assert!(log.contains("built without CUDA"), "{log}");
}

#[test]
fn chat_models_refuse_a_gpu_and_bad_names_are_refused() {
    let (ok, log) = serve_and_exit("smollm2-135m-instruct", "cuda");
    assert!(!ok, "{log}");
    assert!(log.contains("--device cuda:0"), "{log}");

    let (ok, log) = serve_and_exit("all-minilm-l6-v2", "gpu");
    assert!(!ok, "{log}");
    assert!(log.contains("not a device"), "{log}");
}
