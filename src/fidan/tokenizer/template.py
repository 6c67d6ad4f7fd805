"""A model's own chat template (Jinja, as ``transformers`` stores it), rendered with exact masks.

``render_template`` gives the token ids ``transformers``' ``apply_chat_template`` gives for the
same messages (the same Jinja settings: ``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``,
``raise_exception``, ``strftime_now``, ``tojson`` without ASCII escapes, ``{% generation %}``
blocks), and for each id whether it is assistant output to train on: an assistant turn's text and
the token that ends the turn (``<|im_end|>``, ``<|eot_id|>``, ``</s>`` ...), nothing of the
template around it.

How the mask is found: the template is rendered for each prefix of the conversation. An
assistant turn's text starts where the rendering of the turns before it, with the generation
prompt, ends, and runs to the end of the turn's end-of-turn token; the rendered string is
tokenized once, with its character offsets, and a token is trained on when it starts inside such
a span. A template that renders earlier turns differently once later turns follow (one that
moves the system prompt into the last user turn, say) cannot give exact masks and is refused.

A template without a system role (Mistral's) gets the system text at the head of the next user
turn. A message's text can never forge a special token: when a message contains the spelling of one
(``<|im_end|>``), that message's text is tokenized as plain text, as fidan's own template does.
"""
from __future__ import annotations

import datetime
import functools
import json
from typing import TYPE_CHECKING

from fidan.errors import FidanError

if TYPE_CHECKING:
    from fidan.tokenizer.bpe import FidanTokenizer

# For a model that brings no chat template: plain role names, each assistant turn closed by EOS.
DEFAULT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}: "
                    "{{ message['content'] }}{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
                    "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}")
ROLES = ("system", "user", "assistant")


@functools.lru_cache(maxsize=16)
def _compiled(source: str):
    from jinja2 import TemplateError, nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):  # {% generation %}...{% endgeneration %}: marks assistant text; renders its body
        tags = {"generation"}

        def parse(self, parser):
            next(parser.stream)
            return nodes.Scope(parser.parse_statements(("name:endgeneration",), drop_needle=True))

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise FidanError(f"the model's chat template does not parse ({e})") from None


def render_text(tok: FidanTokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The template's text for ``messages`` (what ``apply_chat_template(..., tokenize=False)`` gives)."""
    from jinja2 import TemplateError

    names = {f"{k}_token": (v or "") for k, v in tok.token_names.items()}
    try:
        return _compiled(tok.template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                              **names)
    except TemplateError as e:
        raise FidanError(f"the model's chat template refused this conversation ({e})") from None


def end_of_turn(tok: FidanTokenizer) -> int | None:
    """The special token the template closes an assistant turn with, if it names one."""
    probe = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    try:
        before = render_text(tok, probe[:1], True)
        whole = render_text(tok, probe)
    except FidanError:
        return None
    turn = whole[len(before):] if whole.startswith(before) else whole
    rest = turn[turn.find("A") + 1:].lstrip() if "A" in turn else ""
    specials = sorted((tok.tok.id_to_token(i) for i in tok.special_ids), key=len, reverse=True)
    return next((tok.tok.token_to_id(s) for s in specials if s and rest.startswith(s)), None)


def accepts_system(tok: FidanTokenizer) -> bool:
    """Whether the template takes a system turn (Mistral's refuses one)."""
    if getattr(tok, "_accepts_system", None) is None:
        try:
            render_text(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], True)
            tok._accepts_system = True
        except FidanError:
            tok._accepts_system = False
    return tok._accepts_system


def fold_system(messages: list[dict]) -> list[dict]:
    """System turns put at the head of the next user turn, for a template without a system role."""
    out: list[dict] = []
    pending: list[str] = []
    for m in messages:
        if m["role"] == "system":
            pending.append(m["content"])
        elif m["role"] == "user" and pending:
            out.append({"role": "user", "content": "\n\n".join(pending + [m["content"]])})
            pending = []
        else:
            out.append(m)
    if pending:
        out.append({"role": "user", "content": "\n\n".join(pending)})
    return out


def _specials(tok: FidanTokenizer):
    """A copy of the tokenizer that reads special tokens' spellings as the special tokens."""
    if getattr(tok, "_with_specials", None) is None:
        from tokenizers import Tokenizer
        copy = Tokenizer.from_str(tok.tok.to_str())
        copy.encode_special_tokens = False
        tok._with_specials = copy
    return tok._with_specials


def _encode(tok: FidanTokenizer, text: str, plain: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Ids and start offsets of ``text``, special tokens read as such except inside ``plain`` spans."""
    ids: list[int] = []
    starts: list[int] = []
    pos = 0
    for start, end in sorted(plain) + [(len(text), len(text))]:
        for a, b, encoder in ((pos, start, _specials(tok)), (start, end, tok.tok)):
            if b > a:
                enc = encoder.encode(text[a:b], add_special_tokens=False)
                ids += enc.ids
                starts += [a + o[0] for o in enc.offsets]
        pos = max(pos, end)
    return ids, starts


def render_template(tok: FidanTokenizer, messages: list[dict], add_generation_prompt: bool = False
                    ) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation in the model's template, and which of them are trained on."""
    for m in messages:
        if m.get("role") not in ROLES:
            raise ValueError(f"unknown chat role {m.get('role')!r} (use system, user or assistant)")
    messages = [{"role": m["role"], "content": m.get("content", "")} for m in messages]
    if any(m["role"] == "system" for m in messages) and not accepts_system(tok):
        messages = fold_system(messages)
    full = render_text(tok, messages, add_generation_prompt)
    eot = tok.tok.id_to_token(tok.end_of_turn)
    spelled = [s for s in (tok.tok.id_to_token(i) for i in tok.special_ids) if s]
    learn: list[tuple[int, int]] = []
    plain: list[tuple[int, int]] = []
    done = ""  # the rendering of the messages so far
    for i, m in enumerate(messages):
        head = render_text(tok, messages[:i], m["role"] == "assistant") if i or m["role"] == "assistant" else ""
        upto = render_text(tok, messages[:i + 1])
        if not (upto.startswith(head) and upto.startswith(done) and full.startswith(upto)):
            raise FidanError("the model's chat template renders earlier turns differently once later turns "
                             "follow, so the assistant turns cannot be masked exactly")
        begin = max(len(head), len(done))
        at = full.find(m["content"], begin, len(upto)) if m["content"] else -1
        if at >= 0 and any(s in m["content"] for s in spelled):
            plain.append((at, at + len(m["content"])))   # its text, never a special token
        if m["role"] == "assistant":
            cut = full.find(eot, at + len(m["content"]) if at >= 0 else len(head), len(upto))
            learn.append((len(head), cut + len(eot) if cut >= 0 else len(upto)))
        done = upto
    ids, starts = _encode(tok, full, plain)
    mask = [any(a <= s < b for a, b in learn) for s in starts]
    return ids, mask
