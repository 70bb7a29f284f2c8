//! Sequence classification: the head's logits as label scores, best first — a softmax when the
//! labels exclude each other, an independent sigmoid per label when several may apply.

use super::label_name;
use super::math::{sigmoid, softmax};

/// One label and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// What a request asks of its label scores.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassifyOptions<'a> {
    /// Independent sigmoid scores instead of a softmax over all labels.
    pub multi_label: bool,
    /// Keep only the best `k` labels.
    pub top_k: Option<usize>,
    /// Keep only these labels (the request's schema). The scores stay those of the softmax over
    /// every label, so they still say how sure the model is against all of its labels.
    pub only: Option<&'a [String]>,
}

/// The labels of one input, best first. `labels` are the model's label names by index.
pub fn label_scores(
    logits: &[f32],
    labels: &[String],
    options: ClassifyOptions<'_>,
) -> Vec<LabelScore> {
    let scores = if options.multi_label {
        sigmoid(logits)
    } else {
        softmax(logits)
    };
    let mut ranked: Vec<LabelScore> = scores
        .into_iter()
        .enumerate()
        .map(|(i, score)| LabelScore {
            label: label_name(labels, i),
            score,
        })
        .filter(|ls| options.only.is_none_or(|only| only.contains(&ls.label)))
        .collect();
    // A stable sort: labels with equal scores stay in the model's order, so answers are
    // deterministic.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    if let Some(k) = options.top_k {
        ranked.truncate(k);
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn ranked(scores: &[LabelScore]) -> Vec<(&str, f32)> {
        scores.iter().map(|s| (s.label.as_str(), s.score)).collect()
    }

    fn assert_scores(got: &[LabelScore], want: &[(&str, f32)]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((label, score), (want_label, want_score)) in ranked(got).into_iter().zip(want) {
            assert_eq!(label, *want_label, "{got:?}");
            assert!((score - want_score).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn softmax_scores_match_a_hand_computation() {
        // e^0 : e^ln2 : e^ln3 = 1 : 2 : 3, so the probabilities are 1/6, 2/6 and 3/6.
        let logits = [0.0, 2f32.ln(), 3f32.ln()];
        let got = label_scores(
            &logits,
            &names(&["a", "b", "c"]),
            ClassifyOptions::default(),
        );
        assert_scores(&got, &[("c", 0.5), ("b", 1.0 / 3.0), ("a", 1.0 / 6.0)]);
    }

    #[test]
    fn multi_label_scores_each_label_on_its_own() {
        // sigmoid(ln 3) = 3 / (3 + 1); sigmoid(0) = 1/2; they need not sum to one.
        let options = ClassifyOptions {
            multi_label: true,
            ..Default::default()
        };
        let got = label_scores(&[0.0, 3f32.ln()], &names(&["a", "b"]), options);
        assert_scores(&got, &[("b", 0.75), ("a", 0.5)]);
    }

    #[test]
    fn top_k_keeps_the_best_and_ties_keep_the_model_order() {
        let options = ClassifyOptions {
            top_k: Some(3),
            ..Default::default()
        };
        let got = label_scores(
            &[1.0, 2.0, 2.0, 0.0],
            &names(&["a", "b", "c", "d"]),
            options,
        );
        let order: Vec<&str> = got.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(got[0].score, got[1].score);
    }

    #[test]
    fn a_schema_keeps_its_labels_without_renormalizing() {
        let only = names(&["a", "c"]);
        let options = ClassifyOptions {
            only: Some(&only),
            ..Default::default()
        };
        let logits = [0.0, 2f32.ln(), 3f32.ln()];
        let got = label_scores(&logits, &names(&["a", "b", "c"]), options);
        assert_scores(&got, &[("c", 0.5), ("a", 1.0 / 6.0)]);
    }

    #[test]
    fn labels_the_model_does_not_name_get_transformers_names() {
        let got = label_scores(&[0.0, 1.0], &names(&["a"]), ClassifyOptions::default());
        assert_eq!(got[0].label, "LABEL_1");
    }
}
