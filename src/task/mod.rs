//! What tasks mean, apart from HTTP and from the engines: how each encoder task turns the
//! model's raw outputs into answers (embeddings, label scores, entities, zero-shot rankings),
//! chat templates, and the shaping of generation requests.

pub mod chat_template;
pub mod classify;
pub mod embed;
pub mod generate;
pub mod math;
pub mod ner;
pub mod output;
pub mod zero_shot;

/// The name of label `i`: the model's own (`id2label`), or `LABEL_i`, the name transformers
/// gives a label the configuration does not name.
fn label_name(labels: &[String], i: usize) -> String {
    labels
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("LABEL_{i}"))
}
