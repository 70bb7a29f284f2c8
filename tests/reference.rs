//! Every task on real weights, through real HTTP, against outputs of the reference
//! implementations (sentence-transformers / transformers) stored in tests/fixtures.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_embeddings_match_sentence_transformers() {
    let reference = reference();
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let inputs = reference["minilm"]["inputs"].clone();
    let expected = reference["minilm"]["embeddings"]
        .as_array()
        .unwrap()
        .clone();

    let (status, body) = server.predict(json!({"inputs": inputs})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"], "embed");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), expected.len());
    for (i, (got, want)) in outputs.iter().zip(&expected).enumerate() {
        let (got, want) = (floats(got), floats(want));
        assert_eq!(got.len(), 384);
        let c = cosine(&got, &want);
        assert!(c >= 0.999, "input {i}: cosine {c}");
        let norm: f64 = got.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalized by default");
    }

    // Batch == single: each input alone gives the same vector as in the batch.
    for (i, input) in inputs.as_array().unwrap().iter().enumerate() {
        let (status, single) = server.predict(json!({"inputs": input})).await;
        assert_eq!(status, 200);
        let c = cosine(&floats(&single["outputs"][0]), &floats(&outputs[i]));
        assert!(c > 0.99999, "input {i}: batch vs single cosine {c}");
    }

    // normalize=false returns the raw mean-pooled vector.
    let (_, raw) = server
        .predict(json!({"inputs": "This is a test sentence.", "parameters": {"normalize": false}}))
        .await;
    let raw = floats(&raw["outputs"][0]);
    let norm: f64 = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3);
    assert!(cosine(&raw, &floats(&expected[0])) >= 0.999);
    server.stop().await.unwrap();
}

/// Batches of many rows run their feed-forward products as Strassen–Winograd products, whose
/// rounding differs from the plain product's: a large batch must still match the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_embeddings_of_a_large_batch_match_sentence_transformers() {
    let reference = reference();
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let inputs = reference["minilm"]["inputs"].as_array().unwrap().clone();
    let expected = reference["minilm"]["embeddings"].as_array().unwrap();
    let copies = 8;
    let batch: Vec<_> = (0..copies).flat_map(|_| inputs.iter().cloned()).collect();

    let (status, body) = server.predict(json!({ "inputs": batch })).await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), copies * inputs.len());
    for (i, got) in outputs.iter().enumerate() {
        let c = cosine(&floats(got), &floats(&expected[i % inputs.len()]));
        assert!(c >= 0.999, "input {i}: cosine {c}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_zero_shot_ranks_labels_and_accepts_the_nlu_shape() {
    let server = TestServer::start(quick_config(real_model("all-minilm-l6-v2"))).await;
    let (status, body) = server
        .predict(json!({
            "task": "zero-shot",
            "inputs": ["The striker scored a goal in the final minute.", "Add two cups of flour and bake."],
            "parameters": {"labels": ["cooking", "football", "finance"]}
        }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["labels"][0], "football");
    assert_eq!(body["outputs"][1]["labels"][0], "cooking");
    let scores = floats(&body["outputs"][0]["scores"]);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first");

    // Scores are cosine similarities of the embeddings, which /predict embed also gives.
    let (_, e) = server
        .predict(json!({"inputs": ["The striker scored a goal in the final minute.", "football"]}))
        .await;
    let c = cosine(&floats(&e["outputs"][0]), &floats(&e["outputs"][1]));
    assert!((c - scores[0]).abs() < 1e-4, "{c} vs {}", scores[0]);

    let (status, nlu) = server
        .predict(json!({"text": "Stocks fell as the bank raised rates.", "schema": {"finance": null, "cooking": null}}))
        .await;
    assert_eq!(status, 200, "{nlu}");
    assert_eq!(nlu["task"], "zero-shot");
    assert_eq!(nlu["outputs"][0]["labels"][0], "finance");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categorium_probabilities_match_transformers() {
    let reference = reference();
    let server = TestServer::start(quick_config(real_model("categorium-en"))).await;
    let labels: Vec<String> = reference["categorium"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let (status, body) = server
        .predict(json!({"inputs": reference["categorium"]["inputs"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"], "classify");
    for (i, (out, want)) in body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["categorium"]["probabilities"].as_array().unwrap())
        .enumerate()
    {
        let want = floats(want);
        let got: HashMap<String, f64> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|ls| {
                (
                    ls["label"].as_str().unwrap().to_string(),
                    ls["score"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got.len(), 27);
        for (label, p) in labels.iter().zip(&want) {
            assert!(
                (got[label] - p).abs() < 1e-4,
                "input {i} {label}: {} vs {p}",
                got[label]
            );
        }
        let best = labels[want
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0]
            .clone();
        assert_eq!(out[0]["label"], best.as_str(), "input {i}: best first");
    }
    let (_, top) = server
        .predict(json!({"inputs": "Bake the bread", "parameters": {"top_k": 3}}))
        .await;
    assert_eq!(top["outputs"][0].as_array().unwrap().len(), 3);
    server.stop().await.unwrap();
}

/// A tiny random sequence classifier of one family against transformers' logits.
async fn sequence_classifier_matches_transformers(model: &str, key: &str) {
    let reference = reference();
    let server = TestServer::start(quick_config(fixture_model(model))).await;
    let r = &reference[key];
    let (status, body) = server.predict(json!({"inputs": r["inputs"]})).await;
    assert_eq!(status, 200, "{body}");
    for (out, logits) in body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["logits"].as_array().unwrap())
    {
        let want = softmax(&floats(logits));
        for ls in out.as_array().unwrap() {
            let idx = ["negative", "neutral", "positive"]
                .iter()
                .position(|l| *l == ls["label"])
                .unwrap();
            let got = ls["score"].as_f64().unwrap();
            assert!(
                (got - want[idx]).abs() < 1e-5,
                "{model}: {got} vs {}",
                want[idx]
            );
        }
    }
    let (_, multi) = server
        .predict(json!({"inputs": r["inputs"][0], "parameters": {"multi_label": true}}))
        .await;
    let sum: f64 = multi["outputs"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|ls| ls["score"].as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() > 1e-3, "sigmoid scores are independent");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_sequence_classifiers_match_transformers_in_every_family() {
    sequence_classifier_matches_transformers("tiny-bert-seqcls", "tiny_seqcls").await;
    // The same weights as pytorch_model.bin, tokenized from vocab.txt alone.
    sequence_classifier_matches_transformers("tiny-bert-seqcls-bin", "tiny_seqcls").await;
    sequence_classifier_matches_transformers("tiny-distilbert-seqcls", "tiny_distilbert_seqcls")
        .await;
    sequence_classifier_matches_transformers("tiny-roberta-seqcls", "tiny_roberta_seqcls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_ner_matches_the_pipeline_in_every_family_and_aggregation_mode() {
    ner_matches_the_pipeline("tiny-bert-ner", "tiny_ner").await;
    ner_matches_the_pipeline("tiny-distilbert-ner", "tiny_distilbert_ner").await;
    ner_matches_the_pipeline("tiny-roberta-ner", "tiny_roberta_ner").await;
}

/// A tiny random token classifier of one family against the transformers pipeline, in every
/// aggregation mode; then the NLU shape keeping only LOC entities.
async fn ner_matches_the_pipeline(model: &str, key: &str) {
    let reference = reference();
    let r = &reference[key];
    let server = TestServer::start(quick_config(fixture_model(model))).await;
    for mode in ["none", "simple", "first", "average", "max"] {
        let (status, body) = server
            .predict(
                json!({"task": "ner", "inputs": r["inputs"], "parameters": {"aggregation": mode}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let expected = r["entities"][mode].as_array().unwrap();
        for (i, (got, want)) in body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected)
            .enumerate()
        {
            let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
            assert_eq!(
                got.len(),
                want.len(),
                "{model} {mode} input {i}: {got:?} vs {want:?}"
            );
            for (g, w) in got.iter().zip(want) {
                for key in ["entity", "entity_group", "word", "start", "end"] {
                    assert_eq!(
                        g.get(key),
                        w.get(key),
                        "{model} {mode} input {i} {key}: {g} vs {w}"
                    );
                }
                let (gs, ws) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
                assert!(
                    (gs - ws).abs() < 1e-4,
                    "{model} {mode} input {i}: score {gs} vs {ws}"
                );
            }
        }
    }
    // The NLU shape on a token classifier keeps only the schema's entity types.
    let (status, body) = server
        .predict(json!({"text": r["inputs"][0], "schema": ["LOC"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"], "ner");
    let groups: Vec<&str> = body["outputs"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entity_group"].as_str().unwrap())
        .collect();
    assert!(
        !groups.is_empty() && groups.iter().all(|g| *g == "LOC"),
        "{model}: {groups:?}"
    );
    server.stop().await.unwrap();
}

#[test]
fn tiny_ner_logits_match_transformers_through_the_library() {
    for (model, key) in [
        ("tiny-bert-ner", "tiny_ner"),
        ("tiny-distilbert-ner", "tiny_distilbert_ner"),
        ("tiny-roberta-ner", "tiny_roberta_ner"),
    ] {
        token_logits_match(model, key);
    }
}

fn token_logits_match(name: &str, key: &str) {
    use wick::model::{LoadOptions, Model};
    let reference = reference();
    let r = &reference[key];
    let model = Model::load(
        &fixture_model(name),
        &LoadOptions::default(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let encodings: Vec<_> = r["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| model.tokenizer.encode(t.as_str().unwrap(), true).unwrap())
        .collect();
    let sequences: Vec<(&[u32], &[u32])> = encodings
        .iter()
        .map(|e| (e.get_ids(), e.get_type_ids()))
        .collect();
    let outputs = model.encoder.forward(&sequences).unwrap();
    for (i, (out, want)) in outputs
        .iter()
        .zip(r["token_logits"].as_array().unwrap())
        .enumerate()
    {
        let wick::model::HeadOutput::TokenLogits(rows) = out else {
            panic!("token logits expected")
        };
        let want = want.as_array().unwrap();
        assert_eq!(rows.len(), want.len(), "{name} input {i}: token count");
        for (row, w) in rows.iter().zip(want) {
            for (a, b) in row.iter().zip(floats(w)) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-4,
                    "{name} input {i}: {a} vs {b}"
                );
            }
        }
    }
}

/// The opt-in int8 mode stays close to the f32 reference (its accuracy cost, measured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_minilm_embeddings_stay_close_to_the_reference() {
    let reference = reference();
    let mut config = quick_config(real_model("all-minilm-l6-v2"));
    config.quantize = wick::model::Quantize::Int8;
    let server = TestServer::start(config).await;
    let (status, body) = server
        .predict(json!({"inputs": reference["minilm"]["inputs"]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let cosines: Vec<f64> = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["minilm"]["embeddings"].as_array().unwrap())
        .map(|(got, want)| cosine(&floats(got), &floats(want)))
        .collect();
    println!("int8 cosine to the f32 reference: {cosines:?}");
    let worst = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(worst >= 0.998, "int8 worst cosine {worst}");
    server.stop().await.unwrap();
}
