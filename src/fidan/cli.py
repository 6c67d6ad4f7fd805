"""Command line: argument parsing only; the work happens in the stage modules.

    fidan pipeline --preset tiny                 run every stage
    fidan <stage> [--run.name=NAME] [overrides]  run one stage (data, tokenizer, tokens, pretrain, sample)
    fidan tokenize "Merhaba dünya"               ids and pieces
    fidan chat                                   talk to the newest model

Overrides are dotted config keys: ``--train.lr=3e-4 --model.n_layer=6``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
import typing
from pathlib import Path

from fidan.config import PRESET_DIR, Config, build_config
from fidan.context import StageSpec
from fidan.errors import FidanError
from fidan.settings import comments
from fidan.stages import EXTRA_STAGES, STAGES

READS_RUN = ("sample", "chat", "label", "tokenize", "methods", "rlhf-compare", "sft", "classify", "reward", "rlhf",
             "bpb", "eval", "report", "export", "serve", "forget")


def settings_help(sections: dict[str, frozenset[str] | None], title: str) -> str:
    """Every setting a command reads: ``--section.key`` TYPE (default, choices, when it matters)
    and its one-line comment, generated from the config dataclasses."""
    cfg = Config()
    lines = [title]

    def table(values, name: str, keys: frozenset[str] | None, when=None) -> None:
        notes = comments(type(values))
        hints = typing.get_type_hints(type(values))
        fields = [f for f in dataclasses.fields(values) if keys is None or f.name in keys]
        if not fields:
            return
        lines.append(f"\n  [{name}]" + (f"  (used when {when})" if when else ""))
        nested = []
        for f in fields:
            value = getattr(values, f.name)
            if dataclasses.is_dataclass(value):
                nested.append((value, f"{name}.{f.name}", f.metadata.get("when")))
                continue
            typ = getattr(hints[f.name], "__name__", str(hints[f.name]))
            bits = [f"default {value!r}"]
            if f.metadata.get("choices"):
                bits.append("one of " + ", ".join(f.metadata["choices"]))
            if f.metadata.get("check") and str(f.metadata["check"]):
                bits.append(str(f.metadata["check"]))
            if f.metadata.get("when"):
                bits.append(f"used when {f.metadata['when']}")
            if f.metadata.get("exec_only"):
                bits.append("not hashed: changes how it runs, not what it makes")
            lines.append(f"    --{name}.{f.name}={typ.upper()}  ({'; '.join(bits)})")
            if notes.get(f.name):
                lines.extend(textwrap.wrap(notes[f.name], 96, initial_indent=" " * 8, subsequent_indent=" " * 8))
        for value, sub, sub_when in nested:
            table(value, sub, None, sub_when)

    for section, keys in sections.items():
        table(getattr(cfg, section), section, keys)
    return "\n".join(lines)


def stage_epilog(spec: StageSpec) -> str:
    reads = spec.allowed()
    text = settings_help(reads, f"settings `fidan {spec.name}` reads (its hash covers those that can change "
                                f"its output):")
    if spec.after:
        text += f"\n\nruns after: {', '.join(spec.after)}; writes {spec.out or 'the run directory'}/"
    return text


def _parser() -> argparse.ArgumentParser:
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))
    p = argparse.ArgumentParser(prog="fidan", description="Grow a small chat model from raw text, stage by stage.",
                                epilog="Any setting can be overridden: --section.key=value; `fidan <stage> --help` "
                                       "lists the settings a stage reads.")
    sub = p.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--preset", help=f"a preset shipped with fidan ({presets})")
        sp.add_argument("--config", help="a TOML config file")

    every = {f.name: None for f in dataclasses.fields(Config)}
    pl = sub.add_parser("pipeline", help="run every stage in order, skipping finished ones", formatter_class=raw,
                        epilog=settings_help(every, "settings (every stage's):"))
    common(pl)
    stage_names = [s.name for s in STAGES]
    pl.add_argument("--until", choices=stage_names, help="stop after this stage")
    pl.add_argument("--nproc", type=int, default=1,
                    help="processes per node for the training stages (run under torchrun; the rest in this process)")
    pl.add_argument("--nnodes", default="1", help="torchrun --nnodes (several machines)")
    pl.add_argument("--node-rank", type=int, default=None, help="torchrun --node-rank")
    pl.add_argument("--rdzv-endpoint", default="", help="torchrun --rdzv-endpoint HOST:PORT")
    pl.add_argument("--rdzv-backend", default="c10d", help="torchrun --rdzv-backend")
    pl.add_argument("--rdzv-id", default="", help="torchrun --rdzv-id (default: the run's name)")
    for stage in STAGES + EXTRA_STAGES:
        parser = sub.add_parser(stage.name, help=stage.help, description=stage.help, formatter_class=raw,
                                epilog=stage_epilog(stage))
        if stage.name == "classify":
            parser.add_argument("--text", action="append", default=[],
                                help="do not train: print the trained head's P(positive) for this text (repeatable)")
        common(parser)
    tk = sub.add_parser("tokenize", help="show the ids and pieces of a text")
    tk.add_argument("text")
    tk.add_argument("--tokenizer", help="a tokenizer.json (default: the run's)")
    common(tk)
    es = sub.add_parser("estimate", help="FLOPs, GPU time, cost, energy and CO2 of a training run",
                        description="Give --params and --tokens, or a --preset / --config (plus overrides).")
    es.add_argument("--params", type=float, help="parameters N, e.g. 175e9")
    es.add_argument("--tokens", type=float, help="training tokens D, e.g. 300e9")
    es.add_argument("--layers", type=int, default=0, help="layers (adds the attention term)")
    es.add_argument("--d-model", type=int, default=0, help="model width (adds the attention term)")
    es.add_argument("--context", type=int, default=0, help="context length (adds the attention term)")
    es.add_argument("--compute", type=float, help="a FLOP budget: print the Chinchilla-optimal N and D")
    es.add_argument("--gpu", default="H100", help="V100, A100, H100, H200 or cpu (this machine, measured)")
    es.add_argument("--gpus", type=int, default=1, help="number of GPUs")
    es.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")
    es.add_argument("--throughput", type=float, default=0.0,
                    help="sustained FLOP/s per GPU, replacing peak x MFU (to reproduce an estimate)")
    es.add_argument("--price", type=float, default=2.0, help="US$ per GPU-hour")
    es.add_argument("--pue", type=float, default=1.2, help="data-centre power usage effectiveness")
    es.add_argument("--grid", type=float, default=0.4, help="kg CO2 per kWh")
    es.add_argument("--check", action="store_true",
                    help="check the planner against published training runs (GPT-3, Megatron-LM, Llama 2, BLOOM)")
    es.add_argument("--project", action="store_true",
                    help="price a whole project (data, labelling, red teaming, compute, facility power); "
                         "a GPT-4-scale scenario unless --params/--tokens/--gpus/--assume change it")
    es.add_argument("--assume", action="append", default=[], metavar="KEY=VALUE",
                    help="change one --project assumption, e.g. comparisons=1e6 (repeatable)")
    es.add_argument("--inference", action="store_true",
                    help="serving: latency per token, time to answer, cost, energy and CO2 per 1M tokens")
    es.add_argument("--batch", type=int, default=1, help="--inference: sequences decoded together")
    es.add_argument("--bytes-per-param", type=float, default=2.0, help="--inference: 2 bf16, 1 int8, 0.5 4-bit")
    es.add_argument("--prompt-tokens", type=int, default=500, help="--inference: prompt length")
    es.add_argument("--answer-tokens", type=int, default=200, help="--inference: answer length")
    es.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common(es)
    bp = sub.add_parser("bpb", help="bits per byte and perplexity of a run's model on a text file")
    bp.add_argument("file", help="a .txt/.md/.jsonl file (optionally .gz)")
    bp.add_argument("--stage", help="which model: pretrain, sft or rlhf (default: the newest)")
    common(bp)
    ex = sub.add_parser("export", help="write a run's model as a Hugging Face transformers folder "
                                       "(Llama, Qwen2 or Mistral)")
    ex.add_argument("--format", default="hf", choices=["hf", "gguf"],
                    help="hf: a transformers folder with a model card; gguf: one file for llama.cpp and Ollama")
    ex.add_argument("--out", required=True, help="folder to write (hf), or file (gguf, e.g. model.gguf)")
    ex.add_argument("--stage", help="which model: pretrain, sft or rlhf (default: the newest)")
    ex.add_argument("--force", action="store_true", help="replace --out even if it is not a fidan export")
    common(ex)
    im = sub.add_parser("import", help="bring a Hugging Face Llama, Qwen2 or Mistral folder (with its own "
                                       "tokenizer and chat template) into a run as its pretrain model")
    im.add_argument("folder")
    common(im)
    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP API and chat page for a run's models")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: none)")
    sv.add_argument("--stage", help="the default model: pretrain, sft or rlhf (default: the newest; all are served)")
    sv.add_argument("--preferences", help="where the page's compare mode records choices "
                                          "(default: the run's preferences.jsonl, which the reward stage reads)")
    sv.add_argument("--max-batch", type=int, default=8, help="requests decoded together per model")
    sv.add_argument("--batching", choices=("continuous", "static"), default="continuous",
                    help="continuous: requests join the running batch between decoding steps and finished "
                         "ones leave at once; static: a batch runs until its last request ends")
    common(sv)
    me = sub.add_parser("methods", help="compare every fine-tuning method on one table (sft/methods.json)")
    me.add_argument("--only", default="", help="comma-separated methods (default: all)")
    common(me)
    rc = sub.add_parser("rlhf-compare", help="PPO, PPO without KL, DPO and GRPO on one table (rlhf-compare.md)")
    rc.add_argument("--only", default="", help="comma-separated variants: ppo, ppo-kl0, dpo, grpo (default: all)")
    common(rc)
    fg = sub.add_parser("forget", help="remove one person's preference records and mark what trained on them stale")
    fg.add_argument("--user", required=True, help="the anonymous id shown by `fidan label` or the chat page")
    fg.add_argument("--file", action="append", default=[], help="another preference file to clean (repeatable)")
    common(fg)
    lb = sub.add_parser("label", help="pick the better of two sampled answers per prompt (writes preferences)")
    lb.add_argument("--stage", help="which model answers: sft or rlhf (default: the newest)")
    lb.add_argument("--prompts", help=".txt (one per line) or .jsonl (prompt/question); default: the world's prompts")
    lb.add_argument("--out", help="preference file (default: the run's preferences.jsonl, read by `fidan reward`)")
    lb.add_argument("--limit", type=int, default=0, help="stop after this many prompts (0 = all)")
    lb.add_argument("--user", help="your anonymous id (default: a new random one, printed)")
    lb.add_argument("--consent", action="store_true",
                    help="agree up front that your choices are kept to train the reward model (else you are asked)")
    common(lb)
    ch = sub.add_parser("chat", help="chat with the newest model of a run")
    ch.add_argument("--stage", help="which model: pretrain, sft or rlhf (default: the newest)")
    ch.add_argument("--show-probs", action="store_true", help="print the top next-token candidates at each step")
    common(ch)
    return p


def _split_overrides(extra: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=")[0]:
            raise FidanError(f"unknown argument '{item}' (overrides look like --section.key=value)")
        if "=" not in item:
            if i + 1 >= len(extra):
                raise FidanError(f"override '{item}' has no value (use {item}=VALUE)")
            item = f"{item}={extra[i + 1]}"
            i += 1
        out.append(item[2:])
        i += 1
    return out


def _config(args, overrides: list[str]) -> Config:
    """For commands on an existing run (``fidan pipeline`` included), the run's saved config is
    the base the overrides apply to; a preset or ``--config`` replaces it."""
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("run.name=")]
    config_file = args.config
    if not args.preset and not config_file:
        root = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.root=")), "runs")
        if names:
            saved = Path(root) / names[-1] / "config.toml"
        elif args.command in READS_RUN:
            from fidan.rundir import latest
            saved = latest(root).path / "config.toml"
            overrides = [f"run.name={saved.parent.name}"] + overrides
        else:
            saved = None
        if saved is not None and saved.exists():
            config_file = str(saved)
    return build_config(args.preset, config_file, overrides)


def main(argv: list[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    try:
        _check_args(args)
        overrides = _split_overrides(extra)
        cfg = _config(args, overrides)
        args.overrides = tuple(overrides)
        _distributed(cfg)
        return _dispatch(args, cfg)
    except FidanError as e:
        print(f"fidan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nfidan: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:   # the reader went away (`fidan estimate --check | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _check_args(args) -> None:
    """Flags with a range, checked before anything is loaded."""
    if args.command == "serve":
        if not 1 <= args.max_batch <= 1024:
            raise FidanError(f"--max-batch={args.max_batch}: requests decoded together must be between 1 and 1024")
        if not 0 <= args.port <= 65535:
            raise FidanError(f"--port={args.port}: a TCP port is between 0 and 65535")


def _distributed(cfg: Config) -> None:
    """Under torchrun: open the process group now (the stages meet at barriers before their
    device is asked for), and let only rank 0 print."""
    from fidan import dist
    if dist.world_size() <= 1:
        return
    from fidan.context import pick_device
    dist.init(pick_device(cfg.run.device).type)
    if not dist.is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def _run_model(cfg: Config, stage: str | None, device: str):
    """The run named by the config, its model folder (``stage``, else the newest), model and tokenizer."""
    from fidan.rundir import RunDir
    from fidan.serve.loading import load_for_inference, model_folder
    run = RunDir.for_config(cfg, create=False)
    folder = model_folder(run, stage)
    model, tok = load_for_inference(folder, run, device)
    return run, folder, model, tok


def _dispatch(args, cfg: Config) -> int:
    from fidan.rundir import RunDir

    if args.command == "estimate":
        return _estimate(args, cfg)
    if args.command == "bpb":
        from fidan.eval.bpb import text_bpb
        run, folder, model, tok = _run_model(cfg, args.stage, cfg.run.device)
        r = text_bpb(model, tok, args.file)
        print(f"{args.file}: {r['bpb']:.4f} bits per byte, perplexity {r['perplexity']:.2f} per token "
              f"({r['tokens']:,} tokens, {folder.name} model of {run.path.name})")
        return 0
    if args.command == "export":
        from fidan.model.io import read_model_info
        from fidan.serve.card import model_card
        from fidan.serve.export import architecture, check_exportable, export_hf
        run, folder, model, tok = _run_model(cfg, args.stage, "cpu")
        if args.format == "gguf":
            from fidan.serve.gguf_export import export_gguf
            out = export_gguf(model, tok, args.out, name=f"{run.path.name}-{folder.name}")
            print(f"wrote {out} ({folder.name} model of {run.path.name}); run it with llama.cpp: "
                  f"llama-cli -m {out} -cnv, or in Ollama through a Modelfile (FROM {out})")
            return 0
        check_exportable(model.cfg)
        card = model_card(run, folder, model, tok, architecture(model.cfg), cfg.to_dict(), where=args.out)
        out = export_hf(model, tok, args.out, force=args.force, card=card,
                        chat=bool(read_model_info(folder).get("chat")))
        print(f"wrote {out}/ ({folder.name} model of {run.path.name}); load it with "
              f"AutoModelForCausalLM.from_pretrained('{out}')")
        return 0
    if args.command == "import":
        from fidan.serve.export import exported_chat
        from fidan.serve.hf_import import import_hf
        from fidan.stages import stage_hash
        run = RunDir.for_config(cfg)
        stage = "sft" if exported_chat(Path(args.folder)) else "pretrain"  # a chat model chats
        target = run.path / stage
        if (target / "model.safetensors").exists():
            raise FidanError(f"{target} already holds a model; import into a new run with --run.name=<name>")
        with run.lock():
            import_hf(args.folder, target)
            # stamped as this run's pretrain (or sft) stage, so `fidan pipeline` builds on it instead of
            # training anew
            run.mark_done(stage, stage_hash(cfg, stage, run.path), {"imported": str(args.folder)}, args.overrides)
        print(f"imported {args.folder} into {target}/ (with its own tokenizer and chat template); next: "
              f"fidan sft --run.name={run.path.name} --sft.data=FILE, or fidan chat --run.name={run.path.name}")
        return 0
    if args.command == "serve":
        from fidan.serve.loading import STAGE_PREFERENCE, load_for_inference, model_folder
        from fidan.serve.server import serve
        run, folder, model, tok = _run_model(cfg, args.stage, cfg.run.device)
        models = {f"{run.path.name}-{folder.name}": model}
        for stage in STAGE_PREFERENCE:
            if stage != folder.name and (run.path / stage / "model.safetensors").exists():
                models[f"{run.path.name}-{stage}"] = load_for_inference(model_folder(run, stage), run,
                                                                        cfg.run.device)[0]
        prefs = Path(args.preferences) if args.preferences else run.path / "preferences.jsonl"
        serve(models, tok, args.host, args.port, args.api_key, prefs, args.max_batch, batching=args.batching)
        return 0
    if args.command == "methods":
        from fidan.commands.methods import METHODS, compare
        names = [n.strip() for n in args.only.split(",") if n.strip()] or list(METHODS)
        run = RunDir.for_config(cfg, create=False)
        with run.lock():
            compare(cfg, run, names)
        return 0
    if args.command == "rlhf-compare":
        from fidan.commands.rlhf_compare import VARIANTS, compare
        names = [n.strip() for n in args.only.split(",") if n.strip()] or list(VARIANTS)
        run = RunDir.for_config(cfg, create=False)
        with run.lock():
            compare(cfg, run, names)
        return 0
    if args.command == "pipeline":
        from fidan.commands.scale import Launch
        from fidan.pipeline import run_pipeline
        launch = Launch(args.nproc, args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_backend, args.rdzv_id)
        run_pipeline(cfg, until=args.until, overrides=args.overrides, launch=launch)
        return 0
    if args.command == "tokenize":
        from fidan.tokenizer.bpe import FidanTokenizer
        run = RunDir.for_config(cfg, create=False)
        path = args.tokenizer
        if path is None and not (run.path / "tokenizer" / "tokenizer.json").exists():
            from fidan.serve.loading import model_folder  # an imported model's own tokenizer
            own = model_folder(run) / "tokenizer.json"
            path = own if own.exists() else None
        path = path or run.require("tokenizer/tokenizer.json", "tokenizer")
        tok = FidanTokenizer.load(path)
        ids = tok.encode(args.text)
        print(f"ids:    {ids}")
        print(f"pieces: {tok.pieces(ids)}")
        print(f"{len(args.text.encode('utf-8'))} bytes -> {len(ids)} tokens; decodes back exactly: "
              f"{tok.decode(ids) == args.text}")
        return 0
    if args.command == "forget":
        from fidan.commands.forget import forget
        from fidan.rlhf import preferences
        from fidan.rundir import RunDir
        if not preferences.USER_ID.fullmatch(args.user):
            raise FidanError(f"--user {args.user!r}: not an id fidan gives (letters, digits, '-', '_')")
        result = forget(RunDir.for_config(cfg, create=False), args.user, [Path(f) for f in args.file])
        for path, n in result["removed"].items():
            print(f"{path}: removed {n} record{'s' if n != 1 else ''} of {args.user}")
        if result["removed_copies"]:
            print(f"reward/: removed {result['removed_copies']} copies the reward stage had kept")
        if result["stale"]:
            print(f"stale now (re-run `fidan pipeline` to train without them): {', '.join(result['stale'])}")
        return 0
    if args.command == "label":
        from fidan.rlhf import judge
        from fidan.rlhf.label import label, read_prompts
        run, folder, model, tok = _run_model(cfg, args.stage, cfg.run.device)
        if args.prompts:
            prompts = read_prompts(args.prompts)
        elif judge.applies(cfg):
            prompts = [p.text for p in judge.world_prompts(cfg)["train"]]
        else:
            raise FidanError("give --prompts FILE (.txt, one prompt per line, or .jsonl with a 'prompt' field)")
        out = Path(args.out) if args.out else run.path / "preferences.jsonl"
        from fidan.rlhf import preferences
        user = args.user or preferences.new_user_id()
        if not preferences.USER_ID.fullmatch(user):
            raise FidanError(f"--user {user!r}: use letters, digits, '-' and '_' (at most 64)")
        label(model, tok, prompts, out, max_tokens=cfg.reward.response_tokens, temperature=cfg.reward.temperature,
              seed=cfg.run.seed, model_name=f"{run.path.name}-{folder.name}", limit=args.limit, user=user,
              consent=args.consent)
        return 0
    if args.command == "chat":
        from fidan.infer.engine import SamplingParams
        from fidan.serve.chat import repl
        run, folder, model, tok = _run_model(cfg, args.stage, cfg.run.device)
        s = cfg.sample
        repl(model, tok, SamplingParams(s.temperature, s.top_k, s.top_p, s.max_tokens, None,
                                        repetition_penalty=s.repetition_penalty), folder.name,
             show_probs=args.show_probs)
        return 0
    if args.command == "classify" and args.text:
        from fidan.finetune.classify import load_classifier, probabilities
        from fidan.tokenizer.bpe import FidanTokenizer
        run = RunDir.for_config(cfg, create=False)
        folder = run.path / "classify"
        if not (folder / "model.safetensors").exists():
            raise FidanError(f"{folder}: no trained classifier; run `fidan classify` first")
        tok_path = folder / "tokenizer.json" if (folder / "tokenizer.json").exists() else \
            run.path / "tokenizer" / "tokenizer.json"
        model = load_classifier(folder, "cpu")
        for text, p in zip(args.text, probabilities(model, FidanTokenizer.load(tok_path), args.text)):
            print(f"P(positive) {p:.3f}  {'positive' if p >= 0.5 else 'negative'}  {text}")
        return 0
    from fidan.pipeline import run_stage
    run_stage(cfg, RunDir.for_config(cfg), args.command, overrides=args.overrides)
    return 0


def _estimate(args, cfg: Config) -> int:
    import json

    from fidan import estimate as est
    if args.compute is not None:
        result = est.chinchilla_optimal(args.compute)
        print(json.dumps(result, indent=2) if args.json else
              f"compute {result['compute']:.3e} FLOPs -> N = {result['params']:.3e} parameters, "
              f"D = {result['tokens']:.3e} tokens ({result['rule']})")
        return 0
    if args.check:
        from fidan.estimate import published
        rows = published.check()
        print(json.dumps(rows, indent=2) if args.json else published.format_check(rows))
        return 0 if all(r["within"] for r in rows) else 1
    if args.project:
        return _estimate_project(args)
    if args.inference:
        from fidan.estimate import inference
        if args.params is None:
            raise FidanError("--inference needs --params (the model's parameter count, e.g. 70e9)")
        result = inference.serve(inference.Serving(
            params=args.params, gpu=args.gpu, n_gpus=args.gpus, bytes_per_param=args.bytes_per_param,
            batch=args.batch, prompt_tokens=args.prompt_tokens, answer_tokens=args.answer_tokens,
            price_per_gpu_hour=args.price, pue=args.pue, grid_kg_per_kwh=args.grid))
        print(json.dumps(result, indent=2) if args.json else inference.format_serving(result))
        return 0
    knobs = dict(gpu=args.gpu, n_gpus=args.gpus, mfu=args.mfu, price_per_gpu_hour=args.price, pue=args.pue,
                 grid_kg_per_kwh=args.grid, peak_override=args.throughput)
    if args.params is not None or args.tokens is not None:
        if args.params is None or args.tokens is None:
            raise FidanError("give both --params and --tokens (or a --preset / --config instead)")
        plan = est.Plan(params=args.params, tokens=args.tokens, n_layer=args.layers, d_model=args.d_model,
                        context=args.context, **knobs)
    elif args.preset or args.config:
        plan = est.plan_from_config(cfg, **knobs)
    else:
        raise FidanError("give --params and --tokens, a --preset, or a --config to estimate")
    result = est.estimate(plan)
    print(json.dumps(result, indent=2) if args.json else est.format_table(result))
    return 0


def _estimate_project(args) -> int:
    import json

    from fidan.estimate import project
    given = {"params": args.params, "tokens": args.tokens}
    values = {k: v for k, v in given.items() if v is not None}
    if args.gpus != 1:
        values["n_gpus"] = args.gpus
    fields = {f.name: f.type for f in dataclasses.fields(project.Project)}
    for item in args.assume:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise FidanError(f"--assume {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        try:
            values[key] = raw if key == "gpu" else (int(float(raw)) if fields[key] == "int" else float(raw))
        except ValueError:
            raise FidanError(f"--assume {key}: {raw!r} is not a number") from None
    result = project.breakdown(project.Project(**values))
    print(json.dumps(result, indent=2) if args.json else project.format_breakdown(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
