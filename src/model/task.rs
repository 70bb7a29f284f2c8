//! The tasks wick serves and which model heads can serve them.

use serde::{Deserialize, Serialize};

use super::encoder::HeadKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Embed,
    Classify,
    Ner,
    ZeroShot,
    /// Text generation by a chat model.
    Generate,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Embed => "embed",
            Task::Classify => "classify",
            Task::Ner => "ner",
            Task::ZeroShot => "zero-shot",
            Task::Generate => "generate",
        }
    }

    pub fn parse(name: &str) -> Option<Task> {
        [
            Task::Embed,
            Task::Classify,
            Task::Ner,
            Task::ZeroShot,
            Task::Generate,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tasks a head supports; the first one is the model's primary task.
pub fn tasks_for(head: HeadKind) -> Vec<Task> {
    match head {
        HeadKind::Embedding => vec![Task::Embed, Task::ZeroShot],
        HeadKind::SequenceClassification => vec![Task::Classify],
        HeadKind::TokenClassification => vec![Task::Ner],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for task in [Task::Embed, Task::Classify, Task::Ner, Task::ZeroShot] {
            assert_eq!(Task::parse(task.as_str()), Some(task));
        }
        assert_eq!(Task::parse("summarize"), None);
    }
}
