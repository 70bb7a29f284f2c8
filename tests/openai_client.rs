//! The official OpenAI Python client (PyPI `openai`, installed by scripts/install-test-deps in
//! tests/.venv-openai) against real wick servers: chat, completions, embeddings, models, and
//! its retry on 429 honouring Retry-After. The checks live in tests/openai_client.py.

mod common;

use common::{quick_config, real_model, root, TestServer};

#[tokio::test]
async fn official_openai_client_works_unchanged() {
    let chat = TestServer::start(quick_config(real_model("smollm2-135m-instruct"))).await;
    let embed = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let mut busy_config = quick_config(real_model("smollm2-135m-instruct"));
    busy_config.max_running_sequences = 1;
    busy_config.max_waiting_sequences = 0;
    let busy = TestServer::start(busy_config).await;
    let python = root().join("tests/.venv-openai/bin/python");
    assert!(python.is_file(), "run scripts/install-test-deps first");
    let args = [
        root().join("tests/openai_client.py").display().to_string(),
        chat.url.clone(),
        embed.url.clone(),
        busy.url.clone(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(args)
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"));
    for server in [chat, embed, busy] {
        server.stop().await.unwrap();
    }
}
