//! Prefix caching: the KV caches of finished sequences, kept while the KV budget has room, so
//! a request that starts with tokens already computed (a conversation's next turn, a shared
//! system prompt) prefills only the rest.

use std::collections::VecDeque;

use crate::model::decoder::KvCache;

/// Prompt tokens a reused prefix always leaves to compute.
const MIN_COMPUTED: usize = 2;

/// A finished sequence's computed tokens and their cache.
struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
}

/// Most recently finished first. Entries hold memory the running sequences may need: the
/// scheduler counts them in its KV budget and evicts the oldest before it refuses work.
#[derive(Default)]
pub(super) struct PrefixCache {
    entries: VecDeque<Entry>,
}

impl PrefixCache {
    /// Keeps `cache`, which holds the first `cache.len()` of `tokens`; at most `capacity`
    /// entries are kept.
    pub(super) fn insert(&mut self, mut tokens: Vec<u32>, cache: KvCache, capacity: usize) {
        if capacity == 0 || cache.is_empty() {
            return;
        }
        tokens.truncate(cache.len());
        self.entries.push_front(Entry { tokens, cache });
        self.entries.truncate(capacity);
    }

    /// Positions held by the kept caches.
    pub(super) fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.cache.len()).sum()
    }

    /// Drops the oldest entry; false when there was none.
    pub(super) fn evict_oldest(&mut self) -> bool {
        self.entries.pop_back().is_some()
    }

    /// A cache of the longest prefix `tokens` shares with a kept one: the kept cache itself
    /// where all of it is shared (a conversation's next turn), else a copy of the shared
    /// positions, the kept one staying, as the most recent, for the next request that starts
    /// the same way (a system prompt that requests running together share). At least two
    /// tokens are left to compute: the last prompt token's logits are needed, and a chunk of
    /// two or more sums its attention in the same order a whole prompt's prefill does, so a
    /// reused prefix gives the logits a fresh prefill would (for weight types whose products
    /// do not depend on the step's shape).
    pub(super) fn longest(&mut self, tokens: &[u32]) -> Option<KvCache> {
        let usable = tokens.len().saturating_sub(MIN_COMPUTED);
        let (index, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, &tokens[..usable])))
            .max_by_key(|&(i, shared)| (shared, std::cmp::Reverse(i)))?;
        if shared == 0 {
            return None;
        }
        let entry = self.entries.remove(index)?;
        if shared == entry.cache.len() {
            return Some(entry.cache);
        }
        let copy = entry.cache.prefix(shared);
        self.entries.push_front(entry);
        Some(copy)
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_of(len: usize) -> KvCache {
        KvCache::zeros(2, 4, len)
    }

    #[test]
    fn longest_shared_prefix_wins_and_leaves_two_tokens_to_compute() {
        let mut prefixes = PrefixCache::default();
        prefixes.insert(vec![1, 2, 3, 9], cache_of(4), 4);
        prefixes.insert(vec![1, 2, 7], cache_of(3), 4);
        assert_eq!(prefixes.tokens(), 7);
        // Shares 3 with the first entry, 2 with the second.
        let cache = prefixes.longest(&[1, 2, 3, 4, 5]).expect("a hit");
        assert_eq!(cache.len(), 3);
        // The whole prompt is cached: two tokens are still left to compute.
        prefixes.insert(vec![5, 6, 7, 8], cache_of(4), 4);
        assert_eq!(prefixes.longest(&[5, 6, 7, 8]).map(|c| c.len()), Some(2));
        assert!(prefixes.longest(&[8, 1, 2]).is_none());
    }

    #[test]
    fn a_partly_shared_entry_is_copied_and_a_wholly_shared_one_taken() {
        let mut prefixes = PrefixCache::default();
        prefixes.insert(vec![1, 2, 3, 4], cache_of(4), 4);
        // A system prompt two requests share: each gets a copy, the entry stays.
        for _ in 0..2 {
            let copy = prefixes.longest(&[1, 2, 3, 8, 9, 10]).expect("a hit");
            assert_eq!(copy.len(), 3);
            assert_eq!(prefixes.tokens(), 4);
        }
        // A conversation's next turn holds the whole entry: it is taken.
        let taken = prefixes.longest(&[1, 2, 3, 4, 5, 6]).expect("a hit");
        assert_eq!(taken.len(), 4);
        assert_eq!(prefixes.tokens(), 0);
    }

    #[test]
    fn capacity_and_eviction_drop_the_oldest() {
        let mut prefixes = PrefixCache::default();
        for first in 0..3 {
            prefixes.insert(vec![first, 1], cache_of(2), 2);
        }
        assert_eq!(prefixes.tokens(), 4);
        assert!(
            prefixes.longest(&[0, 1, 5]).is_none(),
            "the oldest was dropped"
        );
        assert!(prefixes.evict_oldest());
        assert!(prefixes.evict_oldest());
        assert!(!prefixes.evict_oldest());
        assert_eq!(prefixes.tokens(), 0);
    }
}
