//! Zero-shot classification by similarity: each candidate label is embedded like an input —
//! once, then cached — and an input's labels are ranked by the cosine similarity of the input's
//! and the label's embeddings.

use std::sync::Arc;

use quick_cache::sync::Cache;

use super::math::{cosine, l2_normalize};

/// Label texts embedded once and reused by every request (L2-normalized), up to a number of
/// entries. A bounded concurrent cache (`quick_cache`): past its capacity it evicts entries one
/// at a time, the least useful first, never all at once. A request only ever reads it to skip
/// work: it keeps its own `Arc` of each embedding it uses, so an eviction cannot change or
/// fail its answer.
pub struct LabelCache {
    /// None when caching is off (capacity 0): every request embeds its own labels.
    entries: Option<Cache<String, Arc<Vec<f32>>>>,
}

impl LabelCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    pub fn get(&self, label: &str) -> Option<Arc<Vec<f32>>> {
        self.entries.as_ref()?.get(label)
    }

    pub fn insert(&self, label: String, embedding: Arc<Vec<f32>>) {
        if let Some(entries) = &self.entries {
            entries.insert(label, embedding);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One request's candidate labels, in its order, with the embeddings known so far. The request
/// keeps its own copies, so a cache that starts over meanwhile cannot lose a label it needs.
#[derive(Debug, Default)]
pub struct Candidates {
    labels: Vec<(String, Option<Arc<Vec<f32>>>)>,
}

impl Candidates {
    /// The candidates, with the embeddings the cache already holds.
    pub fn lookup(labels: &[String], cache: &LabelCache) -> Self {
        Self {
            labels: labels
                .iter()
                .map(|label| (label.clone(), cache.get(label)))
                .collect(),
        }
    }

    /// The labels without an embedding, each once, in request order: what the model must embed.
    pub fn missing(&self) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for (label, embedding) in &self.labels {
            if embedding.is_none() && !missing.contains(label) {
                missing.push(label.clone());
            }
        }
        missing
    }

    /// Records the model's pooled embedding of `label`, normalized, here and in the cache.
    pub fn learn(&mut self, label: &str, mut pooled: Vec<f32>, cache: &LabelCache) {
        l2_normalize(&mut pooled);
        let embedding = Arc::new(pooled);
        for (_, slot) in self.labels.iter_mut().filter(|(l, _)| l == label) {
            *slot = Some(embedding.clone());
        }
        cache.insert(label.to_string(), embedding);
    }

    /// Every candidate with its similarity to `embedding`, best first; equal scores keep the
    /// request's order.
    pub fn rank(&self, embedding: &[f32]) -> Result<Ranking, UnembeddedLabel> {
        let mut scored: Vec<(String, f32)> = self
            .labels
            .iter()
            .map(|(label, label_embedding)| match label_embedding {
                Some(v) => Ok((label.clone(), cosine(embedding, v))),
                None => Err(UnembeddedLabel(label.clone())),
            })
            .collect::<Result<_, _>>()?;
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (labels, scores) = scored.into_iter().unzip();
        Ok(Ranking { labels, scores })
    }
}

/// An input's candidate labels, best first, with their scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub labels: Vec<String>,
    pub scores: Vec<f32>,
}

/// A candidate was ranked before the model embedded it: a fault of the caller, not the client.
#[derive(Debug, thiserror::Error)]
#[error("zero-shot label {0:?} has no embedding")]
pub struct UnembeddedLabel(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Candidates whose embeddings the model has just computed.
    fn learned(pairs: &[(&str, Vec<f32>)]) -> Candidates {
        let names: Vec<String> = pairs.iter().map(|(l, _)| l.to_string()).collect();
        let cache = LabelCache::new(16);
        let mut candidates = Candidates::lookup(&names, &cache);
        for (label, v) in pairs {
            candidates.learn(label, v.clone(), &cache);
        }
        candidates
    }

    #[test]
    fn labels_are_ranked_by_cosine_similarity() {
        let candidates = learned(&[
            ("far", vec![0.0, 1.0]),
            ("near", vec![2.0, 0.0]),
            ("between", vec![1.0, 1.0]),
        ]);
        let ranking = candidates.rank(&[5.0, 0.0]).expect("all embedded");
        assert_eq!(ranking.labels, labels(&["near", "between", "far"]));
        let want = [1.0, std::f32::consts::FRAC_1_SQRT_2, 0.0];
        for (got, want) in ranking.scores.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{ranking:?}");
        }
    }

    #[test]
    fn equal_scores_keep_the_request_order() {
        let candidates = learned(&[("b", vec![1.0, 0.0]), ("a", vec![3.0, 0.0])]);
        let ranking = candidates.rank(&[1.0, 1.0]).expect("all embedded");
        assert_eq!(ranking.labels, labels(&["b", "a"]));
    }

    #[test]
    fn only_uncached_labels_are_missing_and_each_once() {
        let cache = LabelCache::new(16);
        cache.insert("known".into(), Arc::new(vec![1.0, 0.0]));
        let candidates = Candidates::lookup(&labels(&["new", "known", "new", "other"]), &cache);
        assert_eq!(candidates.missing(), labels(&["new", "other"]));
    }

    #[test]
    fn a_learned_label_fills_every_slot_and_the_cache_normalized() {
        let cache = LabelCache::new(16);
        let mut candidates = Candidates::lookup(&labels(&["x", "x"]), &cache);
        candidates.learn("x", vec![3.0, 4.0], &cache);
        assert!(candidates.missing().is_empty());
        assert_eq!(*cache.get("x").expect("cached"), vec![0.6, 0.8]);
        assert_eq!(
            candidates.rank(&[1.0, 0.0]).expect("embedded").labels.len(),
            2
        );
    }

    #[test]
    fn the_cache_stays_within_its_capacity_and_evicts_one_at_a_time() {
        let cache = LabelCache::new(100);
        for i in 0..1_000 {
            cache.insert(format!("label {i}"), Arc::new(vec![1.0]));
            assert!(cache.len() <= 100, "{} entries after {i}", cache.len());
        }
        // Past capacity it never starts over: it stays close to full.
        assert!(cache.len() >= 50, "{} entries", cache.len());
    }

    #[test]
    fn a_request_keeps_its_embeddings_whatever_the_cache_evicts() {
        let cache = LabelCache::new(4);
        cache.insert("a".into(), Arc::new(vec![1.0, 0.0]));
        let mut candidates = Candidates::lookup(&labels(&["a", "b"]), &cache);
        candidates.learn("b", vec![0.0, 1.0], &cache);
        for i in 0..100 {
            cache.insert(format!("other {i}"), Arc::new(vec![1.0, 1.0]));
        }
        // Whatever the cache now holds, or if it is gone, the request has what it needs.
        drop(cache);
        let ranking = candidates.rank(&[1.0, 0.1]).expect("still embedded");
        assert_eq!(ranking.labels, labels(&["a", "b"]));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = LabelCache::new(0);
        cache.insert("x".into(), Arc::new(vec![1.0]));
        assert!(cache.get("x").is_none());
        let candidates = Candidates::lookup(&labels(&["x"]), &cache);
        assert_eq!(candidates.missing(), labels(&["x"]));
    }

    #[test]
    fn ranking_before_learning_is_an_error() {
        let candidates = Candidates::lookup(&labels(&["x"]), &LabelCache::new(16));
        assert!(candidates.rank(&[1.0]).is_err());
    }
}
