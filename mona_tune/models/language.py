"""The language source model: a RoBERTa-style encoder from ``transformers``, for 1D tasks.

MoNA and ORCA pair their 1D tasks (PDEBench 1D among them) with RoBERTa-base: the target sequence
is cut into at most 512 pieces, each projected to a token (ORCA's ``Embeddings1D``), the tokens
run through RoBERTa's encoder, and a dense head maps every token back to its piece of the output.
Here the same model is the source of the alignment: its word + position embedding (the frozen
source embedder e_s) embeds labelled text, whose class structure the outer loss and the probe use.

``--source-model roberta-base`` reads the hub (or its local cache); ``--weights DIR`` reads a
directory written by ``save_pretrained`` (``config.json``, the weights and the tokenizer files)
on machines without the hub. Dropout is switched off, as drop path is for the Swin: stage 1
differentiates through one deterministic function. Attention is the eager implementation, whose
second derivatives every backend has.

Tokens travel in the package's channels-last grid layout ``(N, 1, T, D)`` (a row of ``T``
tokens), so pooling, the probe and stage 1 take them unchanged.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from mona_tune.errors import MonaError
from mona_tune.extras import missing
from mona_tune.models.encoder import checkpointed
from mona_tune.models.source import SourceModel, decode_texts

# ORCA's target sequence length for 1D tasks (``target_seq_len``; RoBERTa-base's 514 positions
# less the padding offset).
MAX_TOKENS = 512
_NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


class TextEmbedding(nn.Module):
    """The source embedder e_s: token ids ``(N, T)`` -> the model's input embeddings
    ``(N, 1, T, D)`` (word, position and type embeddings, LayerNorm)."""

    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embeddings = embeddings

    def forward(self, ids: Tensor) -> Tensor:
        return self.embeddings(input_ids=ids).unsqueeze(1)


class LanguageBody(nn.Module):
    """The encoder f: the transformer's layers on a ``(N, h, w, D)`` grid of tokens read row by
    row (every token attends to every other; there is no padding in a target sequence)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.grad_checkpointing = False  # each layer recomputed in the backward pass

    def forward(self, tokens: Tensor) -> Tensor:
        n, h, w, d = tokens.shape
        x = tokens.reshape(n, h * w, d)
        if self.grad_checkpointing and torch.is_grad_enabled():
            for layer in self.encoder.layer:
                x = checkpointed(_FirstOutput(layer), x)
        else:
            x = self.encoder(x)[0]
        return x.reshape(n, h, w, x.shape[-1])


class _FirstOutput(nn.Module):
    """A transformer layer that returns its hidden states alone (layers return tuples)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer(x)
        return out[0] if isinstance(out, tuple) else out


def sequence_tokens(length: int, max_tokens: int) -> int:
    """Tokens of a sequence of ``length`` values: ``ceil(length / piece)`` with the smallest piece
    that fits ``max_tokens`` (ORCA's stack number where it divides the length: 1024 -> 512 tokens
    of 2 values, 128 -> 128 tokens of 1)."""
    piece = math.ceil(length / max_tokens)
    return math.ceil(length / piece)


@dataclass
class LanguageSourceModel(SourceModel):
    """A frozen transformer encoder and its tokenizer; ``prepare`` turns UTF-8 texts into ids."""

    tokenizer: object = field(repr=False, default=None)
    max_tokens: int = MAX_TOKENS
    modality = "text"

    @property
    def embedder(self) -> nn.Module:
        return TextEmbedding(self.net.embeddings)

    @property
    def embed_dim(self) -> int:
        return int(self.net.config.hidden_size)

    def token_grid(self, length: int) -> tuple[int, int]:
        return 1, sequence_tokens(length, self.max_tokens)

    def prepare(self, texts: Tensor) -> Tensor:
        """UTF-8 texts (uint8 rows, zero-padded) -> token ids, padded to the longest."""
        ids = self.tokenizer(decode_texts(texts), padding="longest", truncation=True,
                             max_length=self.max_tokens, return_tensors="pt")["input_ids"]
        return ids.to(texts.device)

    def body(self) -> LanguageBody:
        return LanguageBody(copy.deepcopy(self.net.encoder)).requires_grad_(True).train()

    def random_body(self) -> LanguageBody:
        return LanguageBody(self.fresh_net().encoder).requires_grad_(True).train()

    def init_embedder(self, embedder: nn.Module) -> None:
        """ORCA's ``embedder_init``: the source LayerNorm, and the source position embeddings
        for the target's token positions (RoBERTa counts positions from ``padding_idx + 1``)."""
        emb = self.net.embeddings
        if embedder.kind != "1d":
            raise MonaError("a language source model takes 1D inputs only")
        first = int(getattr(emb, "padding_idx", self.net.config.pad_token_id or 0)) + 1
        table = emb.position_embeddings.weight
        with torch.no_grad():
            embedder.norm.weight.copy_(emb.LayerNorm.weight)
            embedder.norm.bias.copy_(emb.LayerNorm.bias)
            embedder.pos.copy_(table[first:first + embedder.num_tokens].unsqueeze(0))


def load_language_model(name: str, weights: str | None) -> LanguageSourceModel:
    """``AutoModel`` and ``AutoTokenizer`` from the hub name, or from the directory ``weights``."""
    try:
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise missing("transformers") from None
    where = name
    if weights is not None:
        where = str(Path(weights).expanduser())
        if not (Path(where) / "config.json").is_file():
            raise MonaError(f"--weights {weights} for the language model {name!r} must be a "
                            "directory written by save_pretrained (config.json, weights, tokenizer)")
    hf_logging.disable_progress_bar()  # a trial's log is no terminal
    try:
        config = AutoConfig.from_pretrained(where, **_NO_DROPOUT)
        net = AutoModel.from_pretrained(where, config=config, attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(where)
    except (OSError, ValueError) as e:
        raise MonaError(f"source model {name!r} is neither a timm model nor loadable by "
                        f"transformers ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        "on an offline machine pass --weights DIR (a save_pretrained "
                        "directory)") from None
    emb = getattr(net, "embeddings", None)
    if emb is None or not hasattr(emb, "position_embeddings") or not hasattr(net, "encoder"):
        raise MonaError(f"source model {name!r} is a {type(net).__name__}, not a BERT-style "
                        "encoder (embeddings with positions, then an encoder)")
    positions = int(net.config.max_position_embeddings) - int(net.config.pad_token_id or 0) - 1
    model_id = name if weights is None else f"{name}@{Path(where).name}"

    def fresh():
        return AutoModel.from_config(config, attn_implementation="eager")

    return LanguageSourceModel(model_id, net, (0.0,), (1.0,), fresh, {"weights": weights},
                               tokenizer=tokenizer, max_tokens=min(MAX_TOKENS, positions))
