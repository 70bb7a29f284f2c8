"""Converts categorium's TensorFlow BertForSequenceClassification (tf_model.h5) into a
Hugging Face-style directory: model.safetensors with PyTorch names, config.json with the real
id2label (the rows of en_categorias.csv), vocab.txt and tokenizer_config.json.

usage: convert_categorium.py SRC_DIR OUT_DIR   (SRC_DIR is categorium/modelos/en)
"""
import csv
import json
import re
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
from safetensors.numpy import save_file

PREFIXES = {
    "bert/tf_bert_for_sequence_classification/bert/": "bert.",
    "classifier/tf_bert_for_sequence_classification/classifier/": "classifier.",
}


def torch_name(h5_name: str) -> tuple[str, bool]:
    """Maps a Keras weight name to its PyTorch name; True when the matrix must be transposed."""
    for prefix, replacement in PREFIXES.items():
        if h5_name.startswith(prefix):
            name = replacement + h5_name[len(prefix):]
            break
    else:
        raise ValueError(f"unexpected weight {h5_name}")
    name = name.removesuffix(":0")
    name = re.sub(r"layer_\._(\d+)", r"layer.\1", name)
    name = name.replace("/", ".")
    transpose = name.endswith(".kernel")
    name = re.sub(r"\.kernel$", ".weight", name)
    name = re.sub(r"\.gamma$", ".weight", name)
    name = re.sub(r"\.beta$", ".bias", name)
    name = re.sub(r"embeddings\.embeddings$", "embeddings.weight", name)
    return name, transpose


def main(src: Path, out: Path) -> None:
    tensors = {}
    with h5py.File(src / "en_hultig_model" / "tf_model.h5", "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                torch, transpose = torch_name(name)
                value = np.asarray(obj, dtype=np.float32)
                tensors[torch] = np.ascontiguousarray(value.T if transpose else value)
        f.visititems(visit)
    save_file(tensors, str(out / "model.safetensors"))

    with open(src / "en_categorias.csv", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    labels = [row[0].strip() for row in rows[1:] if row and row[0].strip()]
    config = json.loads((src / "en_hultig_model" / "config.json").read_text())
    if len(labels) != len(config["id2label"]):
        raise SystemExit(f"{len(labels)} labels in the CSV, {len(config['id2label'])} in config.json")
    config["id2label"] = {str(i): label for i, label in enumerate(labels)}
    config["label2id"] = {label: i for i, label in enumerate(labels)}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(src / "hultig-bert-token-uncased_en-vocab.txt", out / "vocab.txt")
    (out / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}, indent=2))
    print(f"converted {len(tensors)} tensors, {len(labels)} labels")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
