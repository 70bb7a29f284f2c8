//! The deployment assets as tests/deploy.rs reads them: every render of scripts/render-deploy
//! (kustomize overlays, Helm chart variants) as JSON objects, the effective WICK_* environment
//! of wick's container in each, and wick's flags and defaults from `wick serve --help`.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::common::root;

pub struct Render {
    pub name: String,
    pub objects: Vec<Value>,
}

/// Renders every overlay and chart variant into a fresh directory (scripts/render-deploy
/// installs helm and kubectl into target/deploy-tools on first use).
pub fn renders() -> Vec<Render> {
    static RENDERS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wick-deploy-test-{}-{}",
        std::process::id(),
        RENDERS.fetch_add(1, Ordering::Relaxed)
    ));
    let out = Command::new(root().join("scripts/render-deploy"))
        .arg(&dir)
        .output()
        .expect("scripts/render-deploy runs");
    assert!(
        out.status.success(),
        "render-deploy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut renders: Vec<Render> = std::fs::read_dir(&dir)
        .expect("render dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| Render {
            name: path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned(),
            objects: serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
                .expect("JSON"),
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    renders.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = renders.iter().map(|r| r.name.as_str()).collect();
    for expected in [
        "kustomize-dev",
        "kustomize-prod",
        "kustomize-chat",
        "kustomize-gpu",
        "helm-default",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not rendered: {names:?}"
        );
    }
    renders
}

impl Render {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    pub fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
    }

    pub fn deployment(&self) -> &Value {
        let found = self.of_kind("Deployment");
        assert_eq!(found.len(), 1, "{}: one Deployment", self.name);
        found[0]
    }

    /// The container named wick.
    pub fn wick_container(&self) -> &Value {
        self.deployment()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .find(|c| c["name"] == "wick")
            .unwrap_or_else(|| panic!("{}: no container named wick", self.name))
    }

    /// WICK_* variables the wick container gets: its ConfigMaps' data, then its literal `env`
    /// (a value from a Secret shows as `<secret>`).
    pub fn wick_env(&self) -> BTreeMap<String, String> {
        let container = self.wick_container();
        let mut env = BTreeMap::new();
        for source in container["envFrom"].as_array().into_iter().flatten() {
            let name = source["configMapRef"]["name"]
                .as_str()
                .expect("configMapRef");
            let map = self
                .named("ConfigMap", name)
                .unwrap_or_else(|| panic!("{}: ConfigMap {name} not rendered", self.name));
            for (key, value) in map["data"].as_object().expect("data") {
                env.insert(key.clone(), value.as_str().expect("string").to_string());
            }
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let value = var["value"].as_str().unwrap_or("<secret>");
            env.insert(
                var["name"].as_str().expect("name").to_string(),
                value.to_string(),
            );
        }
        env
    }
}

/// wick's flags: env name -> default, from `wick serve --help`.
pub fn wick_flags() -> BTreeMap<String, Option<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--help"])
        .output()
        .expect("wick serve --help");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut flags = BTreeMap::new();
    // A flag's block starts with `--name`, then has `[env: NAME=]` and maybe `[default: VALUE]`.
    let mut current: Option<String> = None;
    for line in help.lines() {
        if line.trim_start().starts_with("--") {
            current = None;
        }
        // `[env: NAME=]`, or `[env: NAME]` for a flag whose value help hides.
        if let Some(env) = between(line, "[env: ", "]") {
            let env = env.split('=').next().unwrap_or(env);
            flags.insert(env.to_string(), None);
            current = Some(env.to_string());
        }
        if let (Some(env), Some(default)) = (&current, between(line, "[default: ", "]")) {
            flags.insert(env.clone(), Some(default.to_string()));
        }
    }
    assert!(flags.len() > 20, "parsed {} flags from --help", flags.len());
    flags
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// The value wick runs with for `env`: the render's, else wick's default.
pub fn effective(
    env: &BTreeMap<String, String>,
    flags: &BTreeMap<String, Option<String>>,
    name: &str,
) -> String {
    env.get(name)
        .cloned()
        .or_else(|| flags.get(name).cloned().flatten())
        .unwrap_or_else(|| panic!("{name} has neither a value nor a default"))
}

pub fn seconds(value: &str) -> f64 {
    value
        .parse()
        .unwrap_or_else(|_| panic!("{value:?} is not a number of seconds"))
}

/// Words made of `[A-Za-z0-9_]` that start with `prefix`.
pub fn names_with_prefix(text: &str, prefix: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn dockerfiles() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docker"))
        .expect("docker/")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("Dockerfile"))
        })
        .collect();
    files.sort();
    files
}
