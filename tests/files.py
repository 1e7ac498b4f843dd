"""Real files in their published layouts, written small for the tests."""

from __future__ import annotations

import pickle

import numpy as np


def write_cifar_dir(root, per_batch=12, seed=0):
    """A CIFAR-10 python-pickle directory in the exact layout (tiny batches)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root


# Labelled sentences of three topics, built from word lists: enough structure for a probe.
_TOPICS = {
    "weather": ["rain", "cloud", "wind", "storm", "sunny", "cold", "snow", "fog"],
    "sport": ["goal", "match", "team", "score", "coach", "player", "race", "ball"],
    "food": ["bread", "soup", "apple", "cheese", "rice", "salad", "cake", "tea"],
}


def labelled_sentences(n_per_topic=20, seed=0):
    """``(texts, labels)``: sentences of five words from one topic's list each."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n_per_topic):
        for topic, words in _TOPICS.items():
            texts.append("the " + " ".join(rng.choice(words, 5)) + f" {i}")
            labels.append(topic)
    return texts, labels


def write_labelled_text(path, n_per_topic=20, seed=0):
    """A CSV with a header ``text,label`` (the layout of ``--source-data text:FILE``)."""
    import csv

    texts, labels = labelled_sentences(n_per_topic, seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return path


def write_tiny_roberta(directory, max_positions=66, hidden=32, seed=0):
    """A RoBERTa of random weights (2 layers, width ``hidden``) and a byte-level BPE tokenizer
    trained on :func:`labelled_sentences`, written by ``save_pretrained`` as the hub would
    hold it: the directory that ``--weights`` takes on an offline machine."""
    import torch
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(labelled_sentences()[0], vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    bpe._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=2 * hidden,
                           max_position_embeddings=max_positions, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2)
    torch.manual_seed(seed)
    RobertaModel(config).save_pretrained(directory)  # with its pooler, as the hub holds it
    tokenizer.save_pretrained(directory)
    return directory


RAMP_PLUGIN = '''"""A task from another package: running sums of noise, x -> cumsum(x)."""
import torch

from mona_tune.tasks.metrics import nrmse_loss, nrmse_per_sample
from mona_tune.tasks.registry import Task, TaskData, register


def identity(t):
    return t


def load(cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 1, 32, generator=g)
    y = x.cumsum(-1)
    return TaskData(x[:30], y[:30], x[30:38], y[30:38], x[38:], y[38:], identity,
                    {"source": "ramp plugin"})


register(Task(name="ramp", description="running sums of noise (a plugin)", in_channels=1,
              in_shape=(32,), output="dense", out_channels=1, metric="nrmse", direction="min",
              loss=nrmse_loss, metric_per_sample=nrmse_per_sample, load=load))
'''


def write_task_plugin(folder, name="ramp", module="ramp_task", source=RAMP_PLUGIN):
    """An installed package as ``pip install --target folder`` leaves it: the module and its
    ``.dist-info`` declaring the entry point ``name = module`` in the group mona_tune.tasks."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mona_tune.tasks]\n{name} = {module}\n")
    return folder
