"""The chat template: one function renders conversations for training and for inference.

    <|bos|><|system|>You are ...<|end|><|user|>Hello<|end|><|assistant|>Hi!<|end|>

Role markers and the end marker are special tokens, so user text can never forge them. For
inference the rendering stops after ``<|assistant|>`` and the model writes the rest, ending
its turn with ``<|end|>``. ``CHAT_TEMPLATE`` is the same format as a Jinja chat template (what an
export writes for ``transformers``).

A model with its own tokenizer (imported from Hugging Face) brings its own chat template;
``render`` then renders that one (``tokenizer/template.py``), with the same mask semantics.
"""
from __future__ import annotations

from fidan.tokenizer.bpe import ASSISTANT, BOS, END, SYSTEM, USER, FidanTokenizer

ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
                 "<|end|>{% endfor %}{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}")


def render(tok: FidanTokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False
           ) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation, and for each id whether it is assistant output (trained on)."""
    if tok.template is not None:
        from fidan.tokenizer.template import render_template
        return render_template(tok, messages, add_generation_prompt)
    ids, mask = [tok.id_of(BOS)], [False]
    end = tok.id_of(END)
    for m in messages:
        role = m.get("role")
        if role not in ROLE_TOKENS:
            raise ValueError(f"unknown chat role {role!r} (use system, user or assistant)")
        body = tok.encode(m.get("content", ""))
        learn = role == "assistant"
        ids += [tok.id_of(ROLE_TOKENS[role])] + body + [end]
        mask += [False] + [learn] * len(body) + [learn]
    if add_generation_prompt:
        ids.append(tok.id_of(ASSISTANT))
        mask.append(False)
    return ids, mask
