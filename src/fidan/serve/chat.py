"""``fidan chat``: a terminal conversation with a model, streamed token by token.

Commands: ``/reset`` forgets the conversation, ``/system TEXT`` sets a system prompt,
``/temp X`` sets the temperature, ``/probs`` toggles showing the top next-token candidates with
their probabilities at every step, ``/quit`` (or Ctrl-D) leaves.
"""
from __future__ import annotations

import sys

from fidan.infer.engine import SamplingParams, TextStream, generate
from fidan.model.gpt import GPT
from fidan.tokenizer.bpe import FidanTokenizer
from fidan.tokenizer.chat import render

HELP = "commands: /reset  /system TEXT  /temp X  /probs  /quit"
TOP = 3


def candidates(tok: FidanTokenizer, probs, k: int = TOP) -> str:
    """'Kutu 0.70 | Balkon 0.02 | Zebra 0.0001': the k likeliest next tokens."""
    values, ids = probs.topk(k)
    return " | ".join(f"{tok.decode([int(i)])!r} {float(v):.2g}" for v, i in zip(values, ids))


def reply(model: GPT, tok: FidanTokenizer, messages: list[dict[str, str]], params: SamplingParams, out=sys.stdout,
          show_probs: bool = False) -> str:
    ids, _ = render(tok, messages, add_generation_prompt=True)
    budget = model.cfg.context - model.cfg.prompt_tokens - 1
    ids = ids[-budget:]
    stream = TextStream(tok)
    text = []
    steps: list[str] = []
    trace = (lambda probs: steps.append(candidates(tok, probs))) if show_probs else None
    for token in generate(model, ids, params, trace):
        piece = stream.push(token)
        if show_probs:
            out.write(f"\n  [{steps[-1]}] -> {tok.decode([token])!r}")
        else:
            out.write(piece)
        out.flush()
        text.append(piece)
    out.write("\n")
    if show_probs:
        out.write("fidan> " + "".join(text) + "\n")
    return "".join(text)


def repl(model: GPT, tok: FidanTokenizer, params: SamplingParams, stage: str, inp=sys.stdin, out=sys.stdout,
         show_probs: bool = False) -> None:
    params.stop_ids = set(tok.stop_ids)
    messages: list[dict[str, str]] = []
    system = ""
    out.write(f"fidan chat ({stage} model, {model.num_params() / 1e6:.1f}M parameters). {HELP}\n")
    if stage == "pretrain":
        out.write("note: this model is only pre-trained; it continues text rather than following instructions.\n")
    while True:
        out.write("you> ")
        out.flush()
        line = inp.readline()
        if not line:
            out.write("\n")
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            messages = []
            out.write("(conversation cleared)\n")
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip()
            out.write(f"(system prompt: {system or 'none'})\n")
            continue
        if line == "/probs":
            show_probs = not show_probs
            out.write(f"(next-token probabilities {'on' if show_probs else 'off'})\n")
            continue
        if line.startswith("/temp"):
            try:
                params.temperature = float(line.split()[1])
                out.write(f"(temperature {params.temperature})\n")
            except (IndexError, ValueError):
                out.write("usage: /temp 0.7\n")
            continue
        if line.startswith("/"):
            out.write(HELP + "\n")
            continue
        messages.append({"role": "user", "content": line})
        out.write("fidan> ")
        answer = reply(model, tok, ([{"role": "system", "content": system}] if system else []) + messages, params, out,
                       show_probs)
        messages.append({"role": "assistant", "content": answer})
