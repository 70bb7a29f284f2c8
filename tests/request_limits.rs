//! Request size limits over real sockets: a body declared over `--max-body-bytes` is refused
//! before it is sent (`Expect: 100-continue` gets the 413, not `100 Continue`), and a long
//! document is cut to the model's maximum length rather than refused, with a guard for
//! pathological inputs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the server sends on `stream` until it closes it (at most 2 s).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes at once")
        .expect("read");
    String::from_utf8_lossy(&answer).to_string()
}

fn json_body(answer: &str) -> Value {
    let (_, body) = answer.split_once("\r\n\r\n").expect("a complete response");
    serde_json::from_str(body).expect("a JSON body")
}

async fn send_head(server: &TestServer, path: &str, extra: &str) -> TcpStream {
    let address = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{extra}\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_over_size_body_gets_413_at_once_without_100_continue() {
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.max_body_bytes = 4096;
    let server = TestServer::start(config).await;

    for path in ["/predict", "/v1/embeddings"] {
        let t = Instant::now();
        let mut stream = send_head(
            &server,
            path,
            "Content-Length: 10000000\r\nExpect: 100-continue\r\n",
        )
        .await;
        // Not a byte of the body is sent: the answer must come from the header alone.
        let answer = read_until_closed(&mut stream).await;
        eprintln!("{path}: answered in {:?}", t.elapsed());
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        assert!(!answer.contains("100 Continue"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        let body = json_body(&answer);
        if path == "/predict" {
            assert_eq!(body["type"], "payload_too_large", "{body}");
            assert!(body["error"].as_str().unwrap().contains("4096"), "{body}");
        } else {
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
            assert!(body["error"]["message"].as_str().is_some(), "{body}");
        }
    }

    // Within the limit, `Expect: 100-continue` goes on as usual: 100, the body, the answer.
    let payload = br#"{"inputs": "hello"}"#;
    let mut stream = send_head(
        &server,
        "/predict",
        &format!(
            "Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n",
            payload.len()
        ),
    )
    .await;
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut interim))
        .await
        .expect("100 Continue")
        .expect("read");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(payload).await.expect("body");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    // A chunked body declares no length: it is refused once it passes the limit.
    let mut stream = send_head(
        &server,
        "/predict",
        "Transfer-Encoding: chunked\r\nConnection: close\r\n",
    )
    .await;
    let chunk = format!("{:x}\r\n{}\r\n0\r\n\r\n", 5000, "x".repeat(5000));
    stream.write_all(chunk.as_bytes()).await.expect("body");
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    server.stop().await.unwrap();
}

/// Prose of about `chars` characters: sentences from a small vocabulary in a fixed order.
fn document(chars: usize) -> String {
    let sentences = [
        "The committee reviewed the annual report on regional water supplies.",
        "Rainfall in the northern valleys was well below the long-term average.",
        "Engineers proposed new reservoirs, pipelines and a desalination plant.",
        "Farmers asked for clearer rules on irrigation during dry summers.",
        "The council will publish its decision after the public consultation.",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.len() < chars {
        text.push_str(sentences[i % sentences.len()]);
        text.push(if i % 7 == 6 { '\n' } else { ' ' });
        i += 3;
    }
    text.truncate(chars);
    text
}

async fn embed(server: &TestServer, input: &str) -> Vec<f64> {
    let (status, body) = server.predict(json!({"inputs": input})).await;
    assert_eq!(status, 200, "{body}");
    floats(&body["outputs"][0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_document_is_cut_to_the_model_maximum_not_refused() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let long = document(25_000);
    assert_eq!(long.chars().count(), 25_000);

    // The model reads its first 256 tokens, which a few thousand characters already hold.
    let t = Instant::now();
    let whole = embed(&server, &long).await;
    eprintln!("a 25,000-character document embedded in {:?}", t.elapsed());
    let head = embed(&server, &long[..3_000]).await;
    let similarity = cosine(&whole, &head);
    assert!(similarity > 0.99999, "cosine {similarity}");

    let r: Value = server
        .client
        .post(format!("{}/v1/embeddings", server.url))
        .json(&json!({"input": [long, "short"]}))
        .send()
        .await
        .expect("embeddings")
        .json()
        .await
        .expect("json");
    assert_eq!(r["data"].as_array().map(Vec::len), Some(2), "{r}");
    let tokens = r["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(tokens > 256 && tokens < 270, "{r}");
    assert!(cosine(&floats(&r["data"][0]["embedding"]), &whole) > 0.99999);

    // Zero-shot labels and the document ride in one request.
    let (status, body) = server
        .predict(json!({"task": "zero-shot", "inputs": long,
                        "parameters": {"labels": ["water supply", "football"]}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["labels"][0], "water supply", "{body}");

    // Text without spaces is cut too.
    let chinese = "水资源委员会审议了年度报告，北方山谷的降雨量低于长期平均水平。".repeat(800);
    let t = Instant::now();
    let whole = embed(&server, &chinese).await;
    eprintln!(
        "a {}-character Chinese document embedded in {:?}",
        chinese.chars().count(),
        t.elapsed()
    );
    let chinese_head: String = chinese.chars().take(1_000).collect();
    let similarity = cosine(&whole, &embed(&server, &chinese_head).await);
    assert!(similarity > 0.99999, "cosine {similarity}");

    // A head that holds no token (whitespace) is tokenized whole: the words after it count.
    let padded = format!("{}{}", " ".repeat(20_000), &long[..3_000]);
    let similarity = cosine(&embed(&server, &padded).await, &head);
    assert!(similarity > 0.99999, "cosine {similarity}");

    // Without truncation an over-long input is still a clear 422.
    let (status, body) = server
        .predict(json!({"inputs": long, "parameters": {"truncate": false}}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("maximum of 256 tokens"),
        "{body}"
    );

    // The guard against pathological inputs is far past any document.
    let (status, body) = server
        .predict(json!({"inputs": "word ".repeat(200_001)}))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["type"], "payload_too_large", "{body}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_document_is_classified() {
    let server = TestServer::start(quick_config(real_model("categorium-en"))).await;
    let long = document(25_000);
    let (status, body) = server.predict(json!({"inputs": long})).await;
    assert_eq!(status, 200, "{body}");
    let (status, head) = server.predict(json!({"inputs": &long[..3_000]})).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body["outputs"], head["outputs"]);
    server.stop().await.unwrap();
}
