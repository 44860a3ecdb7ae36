"""A tiny Qwen3 causal LM (about 0.5M parameters) sized for CPU runs.

The tokenizer and the model are saved into one folder, so a single
``MODEL_PATH`` serves ``AutoTokenizer``, ``AutoModelForCausalLM`` and verl.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny Qwen3 model (head_dim * heads == hidden)."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    # Wider than Qwen's 0.02: at this size it makes the short warm start learn several times faster.
    initializer_range: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def qwen3_config(tokenizer, cfg: TinyModelConfig = TinyModelConfig()):
    """A ``Qwen3Config`` for ``cfg`` with vocabulary and special ids taken from ``tokenizer``."""
    from transformers import Qwen3Config

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        initializer_range=cfg.initializer_range,
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        dtype="float32",
    )


def make_model(tokenizer, cfg: TinyModelConfig = TinyModelConfig(), seed: int = 0):
    """A freshly initialised float32 ``Qwen3ForCausalLM`` (seeded) with a matching generation config."""
    import torch
    from transformers import GenerationConfig, Qwen3ForCausalLM

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(qwen3_config(tokenizer, cfg)).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def save_model(model, tokenizer, path: str | os.PathLike) -> Path:
    """Save model (safetensors), generation config and tokenizer into ``path``."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def load_model(path: str | os.PathLike):
    """(model, tokenizer) from a world's model folder, model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    model.eval()
    return model, tokenizer
