//! Token classification (NER): per-token logits to entities, with the meanings the Hugging Face
//! token-classification pipeline gives the aggregations `none`, `simple`, `first`, `average`
//! and `max`, and its subword rules.

use serde::{Deserialize, Serialize};
use tokenizers::Encoding;

use super::label_name;
use super::math::{argmax, softmax};
use crate::model::TextTokenizer;

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

/// What an entity is labelled with: one token's (or word's) tag, such as `B-PER`, with
/// aggregation `none`; the type of a group of them, such as `PER`, otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum EntityLabel {
    Token(String),
    Group(String),
}

impl EntityLabel {
    pub fn name(&self) -> &str {
        match self {
            EntityLabel::Token(name) | EntityLabel::Group(name) => name,
        }
    }
}

/// An entity: its label and score, its text, and its character offsets into the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub label: EntityLabel,
    pub score: f32,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// What a request asks of its entities.
#[derive(Debug, Clone, Copy, Default)]
pub struct NerOptions<'a> {
    pub aggregation: Aggregation,
    /// Keep only these entity types (the request's schema), named bare (`PER`) or tagged
    /// (`B-PER`).
    pub only: Option<&'a [String]>,
}

/// The entities of one input, from its text, its encoding and the head's per-token logits.
/// `labels` are the model's label names by index.
pub fn entities(
    text: &str,
    encoding: &Encoding,
    logits: &[Vec<f32>],
    tokenizer: &TextTokenizer,
    labels: &[String],
    options: NerOptions<'_>,
) -> Vec<Entity> {
    let pre = pre_entities(
        text,
        &token_views(encoding),
        logits,
        tokenizer.unk_id(),
        tokenizer.word_aware(),
    );
    let mut entities = aggregate(&pre, options.aggregation, labels, &|t| {
        tokenizer.tokens_to_string(t)
    });
    if let Some(only) = options.only {
        entities.retain(|e| has_type(e, only));
    }
    entities
}

fn token_views(encoding: &Encoding) -> Vec<TokenView<'_>> {
    encoding
        .get_tokens()
        .iter()
        .zip(encoding.get_ids())
        .zip(encoding.get_offsets())
        .zip(encoding.get_special_tokens_mask())
        .map(|(((token, id), (start, end)), special)| TokenView {
            token,
            id: *id,
            start: *start,
            end: *end,
            special: *special == 1,
        })
        .collect()
}

/// Whether the entity's type is among `types`, by its full label or without its B-/I- tag.
fn has_type(entity: &Entity, types: &[String]) -> bool {
    let name = entity.label.name();
    let bare = name.split_once('-').map_or(name, |(_, rest)| rest);
    types.iter().any(|t| t == name || t == bare)
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
    let label = |i: usize| label_name(labels, i);
    let tokens: Vec<Entity> = match strategy {
        Aggregation::None | Aggregation::Simple => pre
            .iter()
            .map(|p| {
                let i = argmax(&p.scores);
                Entity {
                    label: EntityLabel::Token(label(i)),
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
        .filter(|e| e.label.name() != "O")
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
        label: EntityLabel::Token(label(index)),
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
            let (bi, t) = tag(entity.label.name());
            let (_, last_t) = tag(last.label.name());
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
    let first = entities[0].label.name();
    let group = first
        .split_once('-')
        .map_or(first, |(_, rest)| rest)
        .to_string();
    let score = entities.iter().map(|e| e.score).sum::<f32>() / entities.len() as f32;
    let words: Vec<String> = entities.iter().map(|e| e.word.clone()).collect();
    Entity {
        label: EntityLabel::Group(group),
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
        assert_eq!(e[0].label, EntityLabel::Group("PER".into()));
        assert_eq!(e[0].word, "john smith");
        assert_eq!((e[0].start, e[0].end), (0, 10));
    }

    #[test]
    fn first_takes_the_first_piece_label() {
        let p = vec![pre("jo", 0, 2, false, 1), pre("##hn", 2, 4, true, 0)];
        let e = aggregate(&p, Aggregation::First, &labels(), &join);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].word, "john");
        assert_eq!(e[0].label, EntityLabel::Group("PER".into()));
    }

    #[test]
    fn none_keeps_token_labels() {
        let p = vec![pre("jo", 0, 2, false, 1), pre("##hn", 2, 4, true, 2)];
        let e = aggregate(&p, Aggregation::None, &labels(), &join);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].label, EntityLabel::Token("I-PER".into()));
    }

    /// A pre-entity with the given probabilities over O, B-PER and I-PER.
    fn scored(word: &str, start: usize, end: usize, sub: bool, scores: [f32; 3]) -> PreEntity {
        PreEntity {
            word: word.into(),
            scores: scores.to_vec(),
            start,
            end,
            is_subword: sub,
        }
    }

    /// "jo" + "##hn": the first piece leans B-PER, the second I-PER more strongly.
    fn split_word() -> Vec<PreEntity> {
        vec![
            scored("jo", 0, 2, false, [0.2, 0.7, 0.1]),
            scored("##hn", 2, 4, true, [0.05, 0.05, 0.9]),
        ]
    }

    fn only_entity(entities: &[Entity]) -> (&str, f32, &str) {
        assert_eq!(entities.len(), 1, "{entities:?}");
        let e = &entities[0];
        (e.label.name(), e.score, e.word.as_str())
    }

    #[test]
    fn word_strategies_label_a_split_word_as_the_pipeline_does() {
        // first: the first piece's label and score.
        let e = aggregate(&split_word(), Aggregation::First, &labels(), &join);
        assert_eq!(only_entity(&e), ("PER", 0.7, "john"));
        // max: the piece with the highest score decides (I-PER, 0.9).
        let e = aggregate(&split_word(), Aggregation::Max, &labels(), &join);
        assert_eq!(only_entity(&e), ("PER", 0.9, "john"));
        // average: mean scores [0.125, 0.375, 0.5] -> I-PER at 0.5.
        let e = aggregate(&split_word(), Aggregation::Average, &labels(), &join);
        let (group, score, word) = only_entity(&e);
        assert_eq!((group, word), ("PER", "john"));
        assert!((score - 0.5).abs() < 1e-6, "{score}");
    }

    #[test]
    fn simple_scores_a_group_by_the_mean_of_its_tokens() {
        let p = vec![
            scored("ann", 0, 3, false, [0.1, 0.8, 0.1]),
            scored("lee", 4, 7, false, [0.1, 0.1, 0.6]),
        ];
        let e = aggregate(&p, Aggregation::Simple, &labels(), &join);
        let (group, score, word) = only_entity(&e);
        assert_eq!((group, word), ("PER", "ann lee"));
        assert!((score - 0.7).abs() < 1e-6, "{score}");
        assert_eq!((e[0].start, e[0].end), (0, 7));
    }

    #[test]
    fn an_i_tag_after_another_type_starts_a_new_entity() {
        let labels: Vec<String> = ["O", "B-PER", "I-PER", "I-LOC"].map(String::from).into();
        let p = vec![
            PreEntity {
                scores: vec![0.0, 1.0, 0.0, 0.0],
                ..pre("ann", 0, 3, false, 0)
            },
            PreEntity {
                scores: vec![0.0, 0.0, 0.0, 1.0],
                ..pre("paris", 4, 9, false, 0)
            },
        ];
        let e = aggregate(&p, Aggregation::Simple, &labels, &join);
        let groups: Vec<&str> = e.iter().map(|e| e.label.name()).collect();
        assert_eq!(groups, ["PER", "LOC"]);
    }

    fn view(token: &str, start: usize, end: usize) -> TokenView<'_> {
        TokenView {
            token,
            id: 5,
            start,
            end,
            special: false,
        }
    }

    #[test]
    fn wordpiece_subwords_are_pieces_longer_than_their_text() {
        let special = TokenView {
            special: true,
            ..view("[CLS]", 0, 0)
        };
        let tokens = [
            special,
            view("jo", 0, 2),
            view("##hn", 2, 4),
            view("runs", 5, 9),
        ];
        let logits = vec![vec![0.0; 3]; 4];
        let pre = pre_entities("john runs", &tokens, &logits, Some(100), true);
        let flags: Vec<(&str, bool)> = pre
            .iter()
            .map(|p| (p.word.as_str(), p.is_subword))
            .collect();
        assert_eq!(flags, [("jo", false), ("##hn", true), ("runs", false)]);
        assert!(
            (pre[0].scores[0] - 1.0 / 3.0).abs() < 1e-6,
            "softmax of the logits"
        );
    }

    #[test]
    fn bpe_subwords_are_pieces_no_space_touches() {
        let tokens = [view("John", 0, 4), view("son", 4, 7), view("Ġruns", 7, 12)];
        let logits = vec![vec![0.0; 3]; 3];
        let pre = pre_entities("Johnson runs", &tokens, &logits, None, false);
        let flags: Vec<bool> = pre.iter().map(|p| p.is_subword).collect();
        assert_eq!(flags, [false, true, false]);
    }

    #[test]
    fn unknown_tokens_take_the_text_and_start_a_word() {
        let tokens = [
            view("a", 0, 1),
            TokenView {
                id: 100,
                ..view("[UNK]", 1, 2)
            },
        ];
        let logits = vec![vec![0.0; 3]; 2];
        let pre = pre_entities("a☃", &tokens, &logits, Some(100), true);
        assert_eq!((pre[1].word.as_str(), pre[1].is_subword), ("☃", false));
    }

    #[test]
    fn a_schema_keeps_types_by_bare_or_tagged_name() {
        let entity = |label: EntityLabel| Entity {
            label,
            score: 1.0,
            word: "w".into(),
            start: 0,
            end: 1,
        };
        let only = ["PER".to_string()];
        assert!(has_type(&entity(EntityLabel::Group("PER".into())), &only));
        assert!(has_type(&entity(EntityLabel::Token("B-PER".into())), &only));
        assert!(!has_type(&entity(EntityLabel::Group("LOC".into())), &only));
        let tagged = ["I-PER".to_string()];
        assert!(has_type(
            &entity(EntityLabel::Token("I-PER".into())),
            &tagged
        ));
        assert!(!has_type(
            &entity(EntityLabel::Token("B-PER".into())),
            &tagged
        ));
    }

    #[test]
    fn two_b_tags_do_not_merge() {
        let p = vec![pre("ann", 0, 3, false, 1), pre("bob", 4, 7, false, 1)];
        let e = aggregate(&p, Aggregation::Simple, &labels(), &join);
        assert_eq!(e.len(), 2);
    }
}
