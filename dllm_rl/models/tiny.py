"""Tiny random-weight models and a local character-level tokenizer, for tests and demos.

Nothing here touches the network: the tokenizer is built with the ``tokenizers`` library and
the models from configs. Every builder is deterministic in its ``seed`` and leaves the global
RNG untouched (weights are drawn inside ``torch.random.fork_rng``).

    lm = build_tiny_llada(seed=0)                  # our LLaDA architecture, ~0.2M parameters
    ids = lm.tokenizer("1+1=", return_tensors="pt").input_ids
    logits = lm.logits(ids)                        # [1, N, 128]
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.models.llada import LLaDAConfig, LLaDAModelLM, llada_adapter

# Special tokens, named as in LLaDA's tokenizer (the mask is LLaDA's `<|mdm_mask|>` role).
EOS = "<|endoftext|>"  # EOS and pad, as in LLaDA
BOS = "<|startoftext|>"
MASK = "<|mask|>"
EOT = "<|eot_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
UNK = "<|unk|>"
SPECIAL_TOKENS = (EOS, BOS, MASK, EOT, START_HEADER, END_HEADER, UNK)
# Whole-word tokens for the answer format used by the rewards (one id each, not special).
TAG_TOKENS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
CHARACTERS = tuple(string.printable[:95]) + ("\n", "\t")  # printable ASCII, space, newline, tab

# LLaDA-style chat template (LLaMA-3 headers; BOS opens the conversation).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

TINY_VOCAB_SIZE = 128


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with LLaDA's special tokens and a LLaDA-style chat template.

    Ids: the 7 special tokens first (``<|endoftext|>`` = 0 is EOS and pad, ``<|mask|>`` = 2,
    ``<|eot_id|>`` = 3), then the 97 characters, then the 4 answer-format tags: 108 tokens.
    Padding is on the left (prompts are left-padded throughout the toolkit).

    Returns:
        A ``PreTrainedTokenizerFast``; ``decode(encode(text)) == text`` for any text made of
        printable ASCII, newlines and tabs.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=_char_tokenizer(SPECIAL_TOKENS, UNK),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        mask_token=MASK,
        unk_token=UNK,
        extra_special_tokens=[EOT, START_HEADER, END_HEADER],
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def _char_tokenizer(special_tokens: tuple[str, ...], unk: str) -> Tokenizer:
    """Special tokens, then one id per character, then the answer-format tags."""
    vocab = {tok: i for i, tok in enumerate(special_tokens + CHARACTERS)}
    # BPE without merges splits every word into single characters; with no pre-tokenizer the
    # whole text is one word, so spaces and newlines are characters like any other.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=unk))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(special_tokens))
    tok.add_tokens(list(TAG_TOKENS))
    return tok


def build_tiny_bert_tokenizer() -> PreTrainedTokenizerFast:
    """BERT-style variant of the character tokenizer: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2,
    ``[SEP]`` 3, ``[MASK]`` 4; no EOS token (masked-LM adapters fall back to SEP), pad distinct.
    """
    specials = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    return PreTrainedTokenizerFast(
        tokenizer_object=_char_tokenizer(specials, "[UNK]"),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with the global CPU RNG seeded, and restore that RNG after.

    Only the CPU generator is touched (the weights are drawn on the CPU): ``torch.manual_seed``
    would also reseed the CUDA/MPS/NPU generators, for good, since ``fork_rng`` here restores the
    CPU state only.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def _check_vocab(vocab_size: int, tokenizer: PreTrainedTokenizerFast) -> None:
    if vocab_size < len(tokenizer):
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the tiny tokenizer ({len(tokenizer)} "
            "tokens); pass vocab_size >= that"
        )


def tiny_llada_config(
    *,
    vocab_size: int = TINY_VOCAB_SIZE,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    mlp_hidden_size: int | None = None,
    max_sequence_length: int = 1024,
    rope_theta: float = 10000.0,
    attn_implementation: str = "sdpa",
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> LLaDAConfig:
    """A small :class:`LLaDAConfig` whose special ids are those of ``tokenizer``."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    _check_vocab(vocab_size, tokenizer)
    return LLaDAConfig(
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads or n_heads,
        n_layers=n_layers,
        mlp_hidden_size=mlp_hidden_size or 2 * d_model,
        vocab_size=vocab_size,
        embedding_size=vocab_size,
        max_sequence_length=max_sequence_length,
        rope_theta=rope_theta,
        mask_token_id=tokenizer.mask_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=attn_implementation,
    )


def build_tiny_llada(
    seed: int = 0,
    *,
    vocab_size: int = TINY_VOCAB_SIZE,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    mlp_hidden_size: int | None = None,
    max_sequence_length: int = 1024,
    attn_implementation: str = "sdpa",
    init_std: float = 0.02,
    dtype: torch.dtype = torch.float32,
) -> DiffusionLM:
    """A random-weight model of our LLaDA architecture with the tiny tokenizer attached.

    Args:
        seed: weights are a pure function of the seed (and the sizes).
        vocab_size: rows of the embedding and the output head (>= the tokenizer's 108 tokens).
        d_model, n_layers, n_heads, n_kv_heads, mlp_hidden_size: sizes (``n_kv_heads`` defaults
            to ``n_heads``, ``mlp_hidden_size`` to ``2 * d_model``).
        attn_implementation: "sdpa" or "eager".
        init_std: std of the normal init; larger values give peakier, more seed-dependent logits.
        dtype: parameter dtype.

    Returns:
        A :class:`DiffusionLM` (``family="llada"``) in eval mode, with ``.tokenizer`` set.
    """
    tokenizer = build_tiny_tokenizer()
    config = tiny_llada_config(
        vocab_size=vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        mlp_hidden_size=mlp_hidden_size,
        max_sequence_length=max_sequence_length,
        attn_implementation=attn_implementation,
        tokenizer=tokenizer,
    )
    config.init_std = init_std
    with seeded(seed):
        model = LLaDAModelLM(config)
    model.to(dtype).eval()
    return llada_adapter(model, tokenizer)


def build_tiny_dream(
    seed: int = 0,
    *,
    vocab_size: int = TINY_VOCAB_SIZE,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int | None = None,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
) -> DiffusionLM:
    """A random-weight Dream (bidirectional Qwen2, GQA, qkv bias) with the tiny tokenizer.

    The adapter has ``shift_logits=True`` like the published model; EOT is ``<|eot_id|>``
    (recorded as ``config.eot_token_id``, so it survives a save/load round trip).
    """
    from dllm_rl.models.dream import DreamConfig, DreamModel, dream_adapter

    tokenizer = build_tiny_tokenizer()
    _check_vocab(vocab_size, tokenizer)
    config = DreamConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size or 2 * hidden_size,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        mask_token_id=tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        eot_token_id=tokenizer.convert_tokens_to_ids(EOT),
        attn_implementation=attn_implementation,
    )
    with seeded(seed):
        model = DreamModel(config)
    model.to(dtype).eval()
    return dream_adapter(model, tokenizer)


def build_tiny_masked_lm(
    seed: int = 0,
    *,
    arch: str = "modernbert",
    vocab_size: int = TINY_VOCAB_SIZE,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
) -> DiffusionLM:
    """A random-weight encoder masked LM ("modernbert" or "bert") with a BERT-style tokenizer.

    Ids come from the tokenizer as for any masked LM: mask ``[MASK]``, EOS = ``[SEP]`` (no EOS
    token), pad ``[PAD]``.
    """
    from transformers import BertConfig, BertForMaskedLM, ModernBertConfig, ModernBertForMaskedLM

    from dllm_rl.models.masked_lm import masked_lm_adapter

    tokenizer = build_tiny_bert_tokenizer()
    _check_vocab(vocab_size, tokenizer)
    common = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": 1024,
        "pad_token_id": tokenizer.pad_token_id,
        "attn_implementation": attn_implementation,
    }
    if arch == "modernbert":
        config = ModernBertConfig(
            **common,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            local_attention=16,  # small window so tests exercise the sliding-window layers
            global_attn_every_n_layers=2,
        )
        model_class = ModernBertForMaskedLM
    elif arch == "bert":
        config = BertConfig(**common, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model_class = BertForMaskedLM
    else:
        raise ValueError(f"arch must be 'modernbert' or 'bert', got {arch!r}")
    with seeded(seed):
        model = model_class(config)
    model.to(dtype).eval()
    return masked_lm_adapter(model, tokenizer)
