"""``fidan chat``: a terminal conversation with a model, streamed token by token.

Commands: ``/reset`` forgets the conversation, ``/system TEXT`` sets a system prompt,
``/temp X`` sets the temperature, ``/quit`` (or Ctrl-D) leaves.
"""
from __future__ import annotations

import sys

from fidan.model.gpt import GPT
from fidan.serve.engine import SamplingParams, TextStream, generate
from fidan.tokenizer.bpe import END, EOS, FidanTokenizer
from fidan.tokenizer.chat import render

HELP = "commands: /reset  /system TEXT  /temp X  /quit"


def reply(model: GPT, tok: FidanTokenizer, messages: list[dict[str, str]], params: SamplingParams, out=sys.stdout) -> str:
    ids, _ = render(tok, messages, add_generation_prompt=True)
    budget = model.cfg.context - 1
    ids = ids[-budget:]
    stream = TextStream(tok)
    text = []
    for token in generate(model, ids, params):
        piece = stream.push(token)
        out.write(piece)
        out.flush()
        text.append(piece)
    out.write("\n")
    return "".join(text)


def repl(model: GPT, tok: FidanTokenizer, params: SamplingParams, stage: str, inp=sys.stdin, out=sys.stdout) -> None:
    params.stop_ids = {tok.id_of(END), tok.id_of(EOS)}
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
        answer = reply(model, tok, ([{"role": "system", "content": system}] if system else []) + messages, params, out)
        messages.append({"role": "assistant", "content": answer})
