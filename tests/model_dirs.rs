//! Broken or incomplete model directories fail start-up with one message naming the file and
//! the problem — never a panic — both through the library and from the `wick` binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use wick::model::{LoadOptions, Model};

/// A copy of a fixture model in a scratch directory, broken by `damage`.
fn broken(name: &str, damage: impl FnOnce(&Path)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wick-broken-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture_model("tiny-bert-seqcls")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    damage(&dir);
    dir
}

fn load_error(dir: &Path) -> String {
    match Model::load(dir, &LoadOptions::default(), &candle_core::Device::Cpu) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn each_broken_directory_names_its_file_and_problem() {
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "missing directory",
            PathBuf::from("/nonexistent/model"),
            "does not exist",
        ),
        (
            "no config",
            broken("noconfig", |d| {
                std::fs::remove_file(d.join("config.json")).unwrap()
            }),
            "config.json: cannot read",
        ),
        (
            "config not JSON",
            broken("badjson", |d| {
                std::fs::write(d.join("config.json"), "{ not json").unwrap()
            }),
            "config.json: invalid JSON",
        ),
        (
            "no weights",
            broken("noweights", |d| {
                std::fs::remove_file(d.join("model.safetensors")).unwrap()
            }),
            "no weights found",
        ),
        (
            "no tokenizer",
            broken("notokenizer", |d| {
                std::fs::remove_file(d.join("tokenizer.json")).unwrap();
                std::fs::remove_file(d.join("vocab.txt")).unwrap();
            }),
            "no tokenizer found",
        ),
        (
            "truncated weights",
            broken("truncated", |d| {
                let path = d.join("model.safetensors");
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            }),
            "model.safetensors",
        ),
        (
            "weights missing a layer",
            broken("layers", |d| {
                edit_config(d, |c| c["num_hidden_layers"] = 3.into())
            }),
            "model.safetensors",
        ),
        (
            "unsupported architecture",
            broken("gpt2", |d| {
                edit_config(d, |c| c["model_type"] = "gpt2".into())
            }),
            "model_type \"gpt2\" is not supported",
        ),
        (
            "labels with a gap",
            broken("labels", |d| {
                edit_config(d, |c| {
                    c["id2label"] = serde_json::json!({"0": "a", "2": "c"});
                })
            }),
            "id2label has no entry for id 1",
        ),
        (
            "tokenizer.json not JSON",
            broken("badtokenizer", |d| {
                std::fs::write(d.join("tokenizer.json"), "[").unwrap()
            }),
            "tokenizer.json: cannot load tokenizer",
        ),
    ];
    for (what, dir, needle) in cases {
        let message = load_error(&dir);
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        if dir.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[test]
fn the_binary_exits_1_with_the_message_and_no_panic() {
    let dir = broken("binary", |d| {
        std::fs::write(d.join("config.json"), "{").unwrap()
    });
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model"])
        .arg(&dir)
        .env("WICK_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("config.json: invalid JSON"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
