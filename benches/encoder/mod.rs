//! What the encoder benches share: the default model, and a token to fill sequences with.

use std::path::PathBuf;

use wick::model::{LoadOptions, Model};

/// all-MiniLM-L6-v2 from `models/`, and a real token id of its vocabulary to repeat: the cost
/// of a pass depends on shape, not on which tokens.
pub(crate) fn minilm_and_filler() -> (Model, u32) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-minilm-l6-v2");
    let model = Model::load(&dir, &LoadOptions::default(), &candle_core::Device::Cpu)
        .expect("run `models/fetch all-minilm-l6-v2` first");
    let filler = model
        .tokenizer
        .encode("benchmark", false)
        .expect("encode")
        .get_ids()[1];
    (model, filler)
}
