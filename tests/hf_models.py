"""Tiny random Hugging Face models of each architecture fidan imports, built locally with
``transformers`` (nothing downloaded): their own tokenizers (byte-level BPE with ChatML or Llama 3
markers, or SentencePiece-style Metaspace BPE) and chat templates, written here in the formats
those model families use."""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TEXT = ("Merhaba dünya! Hello world, how are you today? The river runs past the old mill. "
        "İstanbul'da yağmur yağıyor. What is two plus three? Five. Bir, iki, üç.\n") * 20

CHATML = ("{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
          "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
          "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
          "\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
          "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
           "[INST] {{ message['content'] }} [/INST]{% elif message['role'] == 'assistant' %}"
           "{{ message['content'] }}{{ eos_token }}{% else %}{{ raise_exception('user and assistant only') }}"
           "{% endif %}{% endfor %}")


def byte_level(specials: list[str], vocab: int = 300) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    return tok


def metaspace(specials: list[str], vocab: int = 200) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([TEXT + "[INST] [/INST]"], trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                                           show_progress=False))
    return tok


KINDS = {
    # name: (transformers config class, its settings, tokenizer, special tokens, template)
    "llama": ("LlamaConfig", {"tie_word_embeddings": True, "rope_theta": 50000.0,
                              "rope_parameters": {"rope_type": "llama3", "rope_theta": 50000.0, "factor": 4.0,
                                                  "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                  "original_max_position_embeddings": 16}},
              "byte", {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
              ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
              LLAMA3),
    "qwen2": ("Qwen2Config", {"use_sliding_window": True, "sliding_window": 6, "max_window_layers": 1,
                              "rope_theta": 1000000.0},
              "byte", {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
              ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML),
    "mistral": ("MistralConfig", {"sliding_window": 5, "head_dim": 12},
                "metaspace", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
                ["<unk>", "<s>", "</s>"], MISTRAL),
}


def build(kind: str, folder: Path, shards: bool = False, seed: int = 0):
    """A tiny random ``kind`` model with its tokenizer and chat template saved in ``folder``;
    returns the transformers model and tokenizer."""
    import transformers

    config_class, settings, tok_kind, names, specials, template = KINDS[kind]
    raw = byte_level(specials) if tok_kind == "byte" else metaspace(specials)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, **names)
    hf_tok.chat_template = template
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(
        vocab_size=raw.get_vocab_size() + 3, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6,
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id,
        **settings)
    model = getattr(transformers, config_class.replace("Config", "ForCausalLM"))(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mapping mistake shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.rand_like(p) + 0.5 if "norm" in name else torch.randn_like(p) * 0.1)
    model.save_pretrained(folder, max_shard_size="40KB" if shards else "1GB")
    hf_tok.save_pretrained(folder)
    return model, hf_tok
