//! Generated ids to streamed text: incremental detokenization that never emits half a UTF-8
//! character, and stop strings that end generation without being emitted themselves (text that
//! could be the start of a stop string is held back until it cannot be).

use crate::model::gguf_tokenizer::ChatTokenizer;

pub(super) struct TextStream {
    ids: Vec<u32>,
    /// Decoding restarts from here, so tokenizers that strip or merge at the start of a
    /// decode see the same context each time.
    prefix_offset: usize,
    read_offset: usize,
    /// Decoded text not yet emitted because it may be the start of a stop string.
    held: String,
    stops: Vec<String>,
}

/// What one new token adds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Delta {
    pub(super) text: String,
    /// A stop string was found: `text` ends just before it, and generation is over.
    pub(super) stopped: bool,
}

impl TextStream {
    pub(super) fn new(stops: Vec<String>) -> Self {
        Self {
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            held: String::new(),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    pub(super) fn push(&mut self, tokenizer: &ChatTokenizer, id: u32) -> Delta {
        self.ids.push(id);
        let prefix = tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset])
            .unwrap_or_default();
        let full = tokenizer
            .decode(&self.ids[self.prefix_offset..])
            .unwrap_or_default();
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            self.held.push_str(&full[prefix.len()..]);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        }
        self.release()
    }

    /// Everything still held back (generation ended for another reason than a stop string).
    pub(super) fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn release(&mut self) -> Delta {
        let found = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = found {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Delta {
                text,
                stopped: true,
            };
        }
        let keep = self
            .stops
            .iter()
            .map(|stop| longest_suffix_prefix(&self.held, stop))
            .max()
            .unwrap_or(0);
        let split = self.held.len() - keep;
        let text = self.held[..split].to_string();
        self.held.drain(..split);
        Delta {
            text,
            stopped: false,
        }
    }
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of `stop`.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let longest = text.len().min(stop.len().saturating_sub(1));
    (1..=longest)
        .rev()
        .find(|&n| {
            let start = text.len() - n;
            text.is_char_boundary(start) && stop.starts_with(&text[start..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::longest_suffix_prefix;

    #[test]
    fn suffix_prefix_overlap() {
        assert_eq!(longest_suffix_prefix("hello wor", "world"), 3);
        assert_eq!(longest_suffix_prefix("hello", "world"), 0);
        assert_eq!(longest_suffix_prefix("abc", "c"), 0);
        assert_eq!(longest_suffix_prefix("é", "éa"), 2);
    }
}
