"""An offline byte-level BPE tokenizer trained on the task's own text.

Digits are always single tokens (``Digits(individual_digits=True)`` runs before
the byte-level step), so numbers are spelled digit by digit. The byte-level
step does not split on words (``use_regex=False``): merges may span spaces, so
the fixed answer-format suffix and the chat scaffolding shrink to a few tokens
and sequences stay short on CPU. Decoding is byte-exact.

Special tokens follow Qwen: ``<|endoftext|>`` (pad), ``<|im_start|>`` and
``<|im_end|>`` (eos), with a Qwen-style chat template::

    <|im_start|>user\\n{content}<|im_end|>\\n<|im_start|>assistant\\n
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)
DEFAULT_VOCAB_SIZE = 512
MODEL_MAX_LENGTH = 256

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def chat_text(content: str, response: str | None = None) -> str:
    """The chat-formatted prompt (and, given ``response``, the full training text with eos)."""
    text = f"{IM_START}user\n{content}{IM_END}\n{IM_START}assistant\n"
    return text if response is None else text + response + IM_END


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE):
    """Train a raw ``tokenizers.Tokenizer`` on ``texts`` (deterministic for the same texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Training does not split on special tokens, so cut them out here: merges then never span them.
    split = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
    pieces = [piece for text in texts for piece in split.split(text) if piece]
    tok.train_from_iterator(pieces, trainer=trainer)
    return tok


def wrap_tokenizer(tok):
    """Wrap a raw tokenizer as a ``transformers.PreTrainedTokenizerFast`` with Qwen-style settings."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )


def build_tokenizer(contents: Iterable[str], responses: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE):
    """Train on the chat-formatted prompts and responses of the task and wrap the result."""
    texts = [chat_text(c) for c in contents] + [r + IM_END for r in responses]
    return wrap_tokenizer(train_tokenizer(texts, vocab_size))
