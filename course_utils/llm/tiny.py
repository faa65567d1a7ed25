"""Tiny, seeded causal LMs and tokenizers of the real architectures, for tests and exercise checkers (no hub, no
assets, a few milliseconds per forward pass).

* :func:`llama_tokenizer` + :func:`tiny_llama`: the ``small`` profile's pair (SmolLM2 is a ``LlamaForCausalLM`` with a
  ChatML template; teacher and student share the tokenizer);
* :func:`mistral_tokenizer` + :func:`tiny_mistral` (teacher, word-level, ``[INST]`` chat template) and
  :func:`char_tokenizer` + :func:`tiny_phi` (student, character-level, logits padded wider than the tokenizer as
  Phi-2's are): the ``gpu`` profile's pair, whose tokenizers split the same text differently;
* :func:`save_gpu_standins`: the gpu profile's smoke-run stand-ins (``KD_SMOKE=1``): ``tiny_mistral`` and
  ``tiny_phi`` built on the *real* Mistral SentencePiece and GPT-2 tokenizers, saved for ``from_pretrained``;
  :func:`save_smollm2_standins` does the same for notebook 08's SmolLM2 pair, two ``tiny_llama`` on SmolLM2's tokenizer.
"""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ['WORDS', 'LLAMA_CHAT', 'MISTRAL_CHAT', 'toy_word_tokenizer', 'toy_char_tokenizer', 'toy_llama_tokenizer', 'toy_mistral_tokenizer', 'tiny_llama', 'tiny_mistral', 'tiny_phi', 'save_model', 'STANDIN_EOS_SCALE', 'PHI_2_PADDED_VOCAB', 'save_gpu_standins', 'save_smollm2_standins']


WORDS = ("the a is are of and to in it that one two three fact moon tea sea sun cat dog sky blue red green big "
         "small hot cold plus minus what which number larger bees make honey trains run on rails music calms "
         "rivers flow write haiku about explain child sentence give short list words related ask question why "
         "important advertisement for volcanoes coffee chess penguins bread robots gardening").split()

LLAMA_CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MISTRAL_CHAT = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"


def toy_word_tokenizer(specials: list[str], words=WORDS, chat_template: str | None = None, eos: str = "</s>",
                   bos: str | None = None, pad: str | None = "<pad>"):
    """A word-level fast tokenizer (lower-cased words and punctuation); unknown words map to ``<unk>``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for tok in [*specials, "<unk>", *words, *list(".,?!:;'\"0123456789-")]:
        vocab.setdefault(tok, len(vocab))
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.normalizer = normalizers.Lowercase()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                               pre_tokenizers.Digits(individual_digits=True)])
    t.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    kwargs = dict(tokenizer_object=t, unk_token="<unk>", eos_token=eos)
    if bos:
        kwargs["bos_token"] = bos
    if pad:
        kwargs["pad_token"] = pad
    tok = PreTrainedTokenizerFast(**kwargs)
    tok.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in (eos, bos, pad)]})
    if chat_template:
        tok.chat_template = chat_template
    return tok


def toy_char_tokenizer():
    """A character-level tokenizer (the 'Phi-2' student): the same text gets many more tokens than word-level."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!:;'\"-\n")
    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    t.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", eos_token="<|endoftext|>")


def toy_llama_tokenizer():
    return toy_word_tokenizer(["<pad>", "<|im_start|>", "<|im_end|>"], chat_template=LLAMA_CHAT, eos="<|im_end|>",
                          pad="<|im_end|>")


def toy_mistral_tokenizer():
    return toy_word_tokenizer(["<pad>", "<s>", "</s>", "[INST]", "[/INST]"], chat_template=MISTRAL_CHAT, eos="</s>",
                          bos="<s>", pad=None)


def tiny_llama(tokenizer, layers: int = 4, seed: int = 0, tied: bool = True):
    """A tiny LlamaForCausalLM; ``tied=False`` gives it an LM head of its own (with tied embeddings a random model
    mostly repeats its last input token: the embedding row that enters the residual stream also scores it)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=tied, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def tiny_mistral(tokenizer, seed: int = 1):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    # Widths are multiples of 64 because the course loads this teacher in 4-bit: on CPUs with AVX512-BF16,
    # bitsandbytes repacks each NF4 layer for its CPU kernel, which needs in_features to be a whole number of
    # 64-weight quantization blocks and out_features a multiple of 32 (see llm.load_4bit's check).
    cfg = MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        sliding_window=64, tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    model = MistralForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def tiny_phi(tokenizer, padded_vocab: int = 96, seed: int = 2):
    """A tiny PhiForCausalLM whose logits are wider than its tokenizer (Phi-2 pads 50 295 tokens to 51 200)."""
    from transformers import PhiConfig, PhiForCausalLM

    torch.manual_seed(seed)
    cfg = PhiConfig(vocab_size=max(padded_vocab, len(tokenizer)), hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, partial_rotary_factor=0.5,
                    max_position_embeddings=512, resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0,
                    bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = PhiForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_model(model, tokenizer, path: Path) -> str:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


#: The smoke run's stand-in teacher writes answers that end: its EOS row of the LM head is scaled by this factor, so
#: that greedy decoding emits EOS within a few tokens for most prompts (with the random row as it is, no response
#: ends before the token cap, and the response filter rightly drops them all).
STANDIN_EOS_SCALE = 5.0

#: Phi-2's logits width: its tokenizer's 50 295 tokens (GPT-2's 50 257 plus added ones) padded to 51 200.
PHI_2_PADDED_VOCAB = 51_200


def save_gpu_standins(root: Path, mistral_tokenizer, gpt2_tokenizer) -> dict[str, str]:
    """Save the gpu profile's smoke-run stand-ins under ``root`` and return their directories.

    ``teacher``: :func:`tiny_mistral` on the real Mistral tokenizer (32 000 tokens, :data:`MISTRAL_CHAT` as its
    chat template, set on the tokenizer passed in), widths multiples of 64 so that bitsandbytes can load it in 4-bit
    on a CPU, its EOS logit row scaled by :data:`STANDIN_EOS_SCALE` so that its answers end; ``student``:
    :func:`tiny_phi` on the real GPT-2 BPE (50 257 tokens) with logits padded to :data:`PHI_2_PADDED_VOCAB` as
    Phi-2's are, with Phi-2's module names (``q_proj``, ``k_proj``, ``v_proj``, ``dense``, ``fc1``, ``fc2``).
    Random weights (seeds 1 and 2); each directory holds the model and its tokenizer, as a hub repository does.

    Args:
        root: an existing directory to write into.
        mistral_tokenizer, gpt2_tokenizer: ``course_utils.llm.models.mistral_tokenizer()`` / ``gpt2_tokenizer()``.

    Returns:
        ``{"teacher": path, "student": path}``.

    Raises:
        ValueError: ``root`` is not an existing directory.
    """
    root = _existing_dir(root)
    mistral_tokenizer.chat_template = MISTRAL_CHAT
    return _save_pair(root, lambda: tiny_mistral(mistral_tokenizer), mistral_tokenizer,
                      lambda: tiny_phi(gpt2_tokenizer, padded_vocab=PHI_2_PADDED_VOCAB), gpt2_tokenizer)


def _existing_dir(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root must be an existing directory to save the stand-ins into, got {str(root)!r}")
    return root


def _save_pair(root: Path, make_teacher, teacher_tokenizer, make_student, student_tokenizer) -> dict[str, str]:
    """Build a stand-in pair without consuming the caller's random numbers, scale the teacher's EOS logit row by
    :data:`STANDIN_EOS_SCALE`, save each with its tokenizer under ``root``."""
    with torch.random.fork_rng():
        teacher, student = make_teacher(), make_student()
    with torch.no_grad():
        teacher.lm_head.weight[teacher_tokenizer.eos_token_id] *= STANDIN_EOS_SCALE
    return {"teacher": save_model(teacher, teacher_tokenizer, root / "teacher"),
            "student": save_model(student, student_tokenizer, root / "student")}


def save_smollm2_standins(root: Path, smollm2_tokenizer) -> dict[str, str]:
    """Save notebook 08's gpu-pair stand-ins (SmolLM2-1.7B-Instruct → SmolLM2-360M-Instruct) under ``root``.

    Both are :func:`tiny_llama` (``LlamaForCausalLM``, as SmolLM2 is) on the *real* SmolLM2 tokenizer passed in
    (49 152 tokens, ChatML template, pad = EOS = ``<|im_end|>``): the teacher with 4 layers (seed 6: its answers
    pass the response filter), the student with 2 (seed 4). Random weights; each directory holds the model and the
    tokenizer, as a hub repository does.
    One difference from SmolLM2 besides the size: the teacher's LM head is not tied to its embeddings, and its EOS
    row is scaled by :data:`STANDIN_EOS_SCALE`, so that its greedy answers are words that end (tied, a random model
    answers the chat prompt's closing newline with newlines, which the response filter rightly drops).

    Returns:
        ``{"teacher": path, "student": path}``.

    Raises:
        ValueError: ``root`` is not an existing directory.
    """
    root = _existing_dir(root)
    return _save_pair(root, lambda: tiny_llama(smollm2_tokenizer, layers=4, seed=6, tied=False), smollm2_tokenizer,
                      lambda: tiny_llama(smollm2_tokenizer, layers=2, seed=4), smollm2_tokenizer)
