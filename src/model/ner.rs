//! Entity aggregation for token classification, with the meanings the Hugging Face
//! token-classification pipeline gives `none`, `simple`, `first`, `average` and `max`.

use serde::{Deserialize, Serialize};

use super::math::{argmax, softmax};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    None,
    #[default]
    Simple,
    First,
    Average,
    Max,
}

/// One token of the input, before aggregation: what the tokenizer said and what the model scored.
#[derive(Debug, Clone)]
pub struct PreEntity {
    pub word: String,
    pub scores: Vec<f32>,
    pub start: usize,
    pub end: usize,
    pub is_subword: bool,
}

/// An entity as returned to clients: `entity` is set for `none`, `entity_group` otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Entity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub score: f32,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// A token-level input to [`pre_entities`]: the token string, its id, char offsets, special flag.
pub struct TokenView<'a> {
    pub token: &'a str,
    pub id: u32,
    pub start: usize,
    pub end: usize,
    pub special: bool,
}

/// Builds the pre-entities from per-token logits, skipping special tokens, with the pipeline's
/// subword rules: for a word-aware tokenizer (WordPiece), a piece is a subword when its token
/// text differs in length from the text it covers (`##ing` covers `ing`); otherwise (byte-level
/// BPE), when it does not start the text and no space touches its start. Unknown tokens take
/// the original text and always start a word.
pub fn pre_entities(
    text: &str,
    tokens: &[TokenView<'_>],
    logits: &[Vec<f32>],
    unk_id: Option<u32>,
    word_aware: bool,
) -> Vec<PreEntity> {
    let chars: Vec<char> = text.chars().collect();
    tokens
        .iter()
        .zip(logits)
        .filter(|(token, _)| !token.special)
        .map(|(token, logits)| {
            let end = token.end.min(chars.len());
            let start = token.start.min(end);
            let word_ref: String = chars[start..end].iter().collect();
            let mut word = token.token.to_string();
            let mut is_subword = if word_aware {
                word.chars().count() != word_ref.chars().count()
            } else {
                // Python's sentence[start - 1 : start + 1]: the character before and at start.
                start > 0 && !chars[start - 1..(start + 1).min(chars.len())].contains(&' ')
            };
            if Some(token.id) == unk_id {
                word = word_ref;
                is_subword = false;
            }
            PreEntity {
                word,
                scores: softmax(logits),
                start,
                end,
                is_subword,
            }
        })
        .collect()
}

/// Aggregates pre-entities into entities, drops the `O` label, as the pipeline does.
/// `join` turns token strings into text (the tokenizer's decoder).
pub fn aggregate(
    pre: &[PreEntity],
    strategy: Aggregation,
    labels: &[String],
    join: &dyn Fn(&[String]) -> String,
) -> Vec<Entity> {
    let label = |i: usize| {
        labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{i}"))
    };
    let tokens: Vec<Entity> = match strategy {
        Aggregation::None | Aggregation::Simple => pre
            .iter()
            .map(|p| {
                let i = argmax(&p.scores);
                Entity {
                    entity_group: None,
                    entity: Some(label(i)),
                    score: p.scores[i],
                    word: p.word.clone(),
                    start: p.start,
                    end: p.end,
                }
            })
            .collect(),
        _ => aggregate_words(pre, strategy, &label, join),
    };
    let entities = if strategy == Aggregation::None {
        tokens
    } else {
        group_entities(&tokens, join)
    };
    entities
        .into_iter()
        .filter(|e| e.entity.as_deref() != Some("O") && e.entity_group.as_deref() != Some("O"))
        .collect()
}

fn aggregate_words(
    pre: &[PreEntity],
    strategy: Aggregation,
    label: &dyn Fn(usize) -> String,
    join: &dyn Fn(&[String]) -> String,
) -> Vec<Entity> {
    let mut words = Vec::new();
    let mut group: Vec<&PreEntity> = Vec::new();
    for p in pre {
        if !group.is_empty() && !p.is_subword {
            words.push(aggregate_word(&group, strategy, label, join));
            group.clear();
        }
        group.push(p);
    }
    if !group.is_empty() {
        words.push(aggregate_word(&group, strategy, label, join));
    }
    words
}

fn aggregate_word(
    group: &[&PreEntity],
    strategy: Aggregation,
    label: &dyn Fn(usize) -> String,
    join: &dyn Fn(&[String]) -> String,
) -> Entity {
    let word = join(&group.iter().map(|p| p.word.clone()).collect::<Vec<_>>());
    let (index, score) = match strategy {
        Aggregation::Max => {
            // The first piece whose best score is the highest, as Python's max() picks.
            let mut best = group[0];
            for p in &group[1..] {
                if max_of(&p.scores) > max_of(&best.scores) {
                    best = p;
                }
            }
            let i = argmax(&best.scores);
            (i, best.scores[i])
        }
        Aggregation::Average => {
            let n = group[0].scores.len();
            let mean: Vec<f32> = (0..n)
                .map(|k| group.iter().map(|p| p.scores[k]).sum::<f32>() / group.len() as f32)
                .collect();
            let i = argmax(&mean);
            (i, mean[i])
        }
        _ => {
            let i = argmax(&group[0].scores);
            (i, group[0].scores[i])
        }
    };
    Entity {
        entity_group: None,
        entity: Some(label(index)),
        score,
        word,
        start: group[0].start,
        end: group[group.len() - 1].end,
    }
}

fn max_of(v: &[f32]) -> f32 {
    v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Splits `B-PER` into ("B", "PER"); a label without a B-/I- prefix continues ("I").
fn tag(name: &str) -> (&str, &str) {
    if let Some(rest) = name.strip_prefix("B-") {
        ("B", rest)
    } else if let Some(rest) = name.strip_prefix("I-") {
        ("I", rest)
    } else {
        ("I", name)
    }
}

fn group_entities(entities: &[Entity], join: &dyn Fn(&[String]) -> String) -> Vec<Entity> {
    let mut groups = Vec::new();
    let mut current: Vec<&Entity> = Vec::new();
    for entity in entities {
        if let Some(last) = current.last() {
            let (bi, t) = tag(entity.entity.as_deref().unwrap_or(""));
            let (_, last_t) = tag(last.entity.as_deref().unwrap_or(""));
            if !(t == last_t && bi != "B") {
                groups.push(group_sub_entities(&current, join));
                current.clear();
            }
        }
        current.push(entity);
    }
    if !current.is_empty() {
        groups.push(group_sub_entities(&current, join));
    }
    groups
}

fn group_sub_entities(entities: &[&Entity], join: &dyn Fn(&[String]) -> String) -> Entity {
    let first = entities[0].entity.as_deref().unwrap_or("");
    let group = first
        .split_once('-')
        .map_or(first, |(_, rest)| rest)
        .to_string();
    let score = entities.iter().map(|e| e.score).sum::<f32>() / entities.len() as f32;
    let words: Vec<String> = entities.iter().map(|e| e.word.clone()).collect();
    Entity {
        entity_group: Some(group),
        entity: None,
        score,
        word: join(&words),
        start: entities[0].start,
        end: entities[entities.len() - 1].end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(tokens: &[String]) -> String {
        tokens.join(" ").replace(" ##", "")
    }

    fn pre(word: &str, start: usize, end: usize, sub: bool, best: usize) -> PreEntity {
        let mut scores = vec![0.1f32; 3];
        scores[best] = 0.8;
        PreEntity {
            word: word.into(),
            scores,
            start,
            end,
            is_subword: sub,
        }
    }

    fn labels() -> Vec<String> {
        vec!["O".into(), "B-PER".into(), "I-PER".into()]
    }

    #[test]
    fn simple_groups_b_then_i_and_drops_o() {
        let p = vec![
            pre("jo", 0, 2, false, 1),
            pre("##hn", 2, 4, true, 2),
            pre("smith", 5, 10, false, 2),
            pre("runs", 11, 15, false, 0),
        ];
        let e = aggregate(&p, Aggregation::Simple, &labels(), &join);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].entity_group.as_deref(), Some("PER"));
        assert_eq!(e[0].word, "john smith");
        assert_eq!((e[0].start, e[0].end), (0, 10));
    }

    #[test]
    fn first_takes_the_first_piece_label() {
        let p = vec![pre("jo", 0, 2, false, 1), pre("##hn", 2, 4, true, 0)];
        let e = aggregate(&p, Aggregation::First, &labels(), &join);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].word, "john");
        assert_eq!(e[0].entity_group.as_deref(), Some("PER"));
    }

    #[test]
    fn none_keeps_token_labels() {
        let p = vec![pre("jo", 0, 2, false, 1), pre("##hn", 2, 4, true, 2)];
        let e = aggregate(&p, Aggregation::None, &labels(), &join);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].entity.as_deref(), Some("I-PER"));
        assert!(e[1].entity_group.is_none());
    }

    #[test]
    fn two_b_tags_do_not_merge() {
        let p = vec![pre("ann", 0, 3, false, 1), pre("bob", 4, 7, false, 1)];
        let e = aggregate(&p, Aggregation::Simple, &labels(), &join);
        assert_eq!(e.len(), 2);
    }
}
