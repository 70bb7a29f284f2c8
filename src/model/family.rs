//! The encoder families wick loads — BERT, RoBERTa/XLM-RoBERTa and DistilBERT — and how
//! each one names its configuration fields and weights. All three are post-LayerNorm
//! transformer encoders, so one fused implementation serves them ([`super::bert`]).

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    Roberta,
    DistilBert,
}

/// Sizes and settings read from config.json, under whatever names the family uses.
#[derive(Debug, Clone)]
pub struct Dims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    /// 0 when the family has no token type embeddings (DistilBERT).
    pub type_vocab: usize,
    pub eps: f64,
    /// First position id of a real token: RoBERTa counts positions after its padding id.
    pub position_offset: usize,
    /// The activation's name in config.json.
    pub activation: String,
}

impl Family {
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "bert" => Some(Family::Bert),
            "roberta" | "xlm-roberta" | "camembert" => Some(Family::Roberta),
            "distilbert" => Some(Family::DistilBert),
            _ => None,
        }
    }

    /// The prefix a task model stores the encoder under (`bert.`, `roberta.`, `distilbert.`).
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::DistilBert => "distilbert",
        }
    }

    pub fn dims(self, config: &Value) -> Result<Dims, String> {
        let size = |key: &str| -> Result<usize, String> {
            config
                .get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| format!("missing or invalid {key:?}"))
        };
        let text = |key: &str, default: &str| {
            config
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string()
        };
        let eps = config
            .get("layer_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-12);
        Ok(match self {
            Family::Bert | Family::Roberta => Dims {
                hidden: size("hidden_size")?,
                layers: size("num_hidden_layers")?,
                heads: size("num_attention_heads")?,
                intermediate: size("intermediate_size")?,
                vocab: size("vocab_size")?,
                max_positions: size("max_position_embeddings")?,
                type_vocab: size("type_vocab_size").unwrap_or(2),
                eps,
                position_offset: if self == Family::Roberta {
                    size("pad_token_id").unwrap_or(1) + 1
                } else {
                    0
                },
                activation: text("hidden_act", "gelu"),
            },
            Family::DistilBert => Dims {
                hidden: size("dim")?,
                layers: size("n_layers")?,
                heads: size("n_heads")?,
                intermediate: size("hidden_dim")?,
                vocab: size("vocab_size")?,
                max_positions: size("max_position_embeddings")?,
                type_vocab: 0,
                eps,
                position_offset: 0,
                activation: text("activation", "gelu"),
            },
        })
    }

    /// Weight names inside one encoder layer.
    pub fn layer_names(self) -> LayerNames {
        match self {
            Family::Bert | Family::Roberta => LayerNames {
                layers: "encoder.layer",
                query: "attention.self.query",
                key: "attention.self.key",
                value: "attention.self.value",
                attention_out: "attention.output.dense",
                attention_norm: "attention.output.LayerNorm",
                intermediate: "intermediate.dense",
                output: "output.dense",
                output_norm: "output.LayerNorm",
            },
            Family::DistilBert => LayerNames {
                layers: "transformer.layer",
                query: "attention.q_lin",
                key: "attention.k_lin",
                value: "attention.v_lin",
                attention_out: "attention.out_lin",
                attention_norm: "sa_layer_norm",
                intermediate: "ffn.lin1",
                output: "ffn.lin2",
                output_norm: "output_layer_norm",
            },
        }
    }
}

/// Dotted weight paths, relative to the encoder root (`layers`) or to one layer (the rest).
pub struct LayerNames {
    pub layers: &'static str,
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_out: &'static str,
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_follow_each_familys_names() {
        let distil = serde_json::json!({"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37,
            "vocab_size": 96, "max_position_embeddings": 64, "activation": "gelu"});
        let d = Family::DistilBert.dims(&distil).unwrap();
        assert_eq!(
            (d.hidden, d.layers, d.heads, d.intermediate, d.type_vocab),
            (32, 2, 4, 37, 0)
        );
        let roberta = serde_json::json!({"hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 37, "vocab_size": 300,
            "max_position_embeddings": 66, "type_vocab_size": 1, "pad_token_id": 1});
        let r = Family::Roberta.dims(&roberta).unwrap();
        assert_eq!((r.position_offset, r.type_vocab), (2, 1));
        assert!(Family::Bert
            .dims(&distil)
            .unwrap_err()
            .contains("hidden_size"));
        assert_eq!(
            Family::from_model_type("xlm-roberta"),
            Some(Family::Roberta)
        );
        assert_eq!(Family::from_model_type("gpt2"), None);
    }
}
