//! Sentence embeddings as clients get them: the model's pooled vector (the pooling is the
//! model's, fixed when it loads), L2-normalized unless the request opts out.

use super::math::l2_normalize;

/// The embedding of one input, from the model's pooled vector.
pub fn embedding(mut pooled: Vec<f32>, normalize: bool) -> Vec<f32> {
    if normalize {
        l2_normalize(&mut pooled);
    }
    pooled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_embeddings_have_unit_length_and_keep_their_direction() {
        assert_eq!(embedding(vec![3.0, 4.0], true), vec![0.6, 0.8]);
    }

    #[test]
    fn raw_embeddings_are_the_pooled_vector() {
        assert_eq!(embedding(vec![3.0, 4.0], false), vec![3.0, 4.0]);
    }
}
