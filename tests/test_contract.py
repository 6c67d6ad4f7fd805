"""The stage contract: declarations, hashes that cover exactly what a stage reads, config views
that refuse undeclared settings, one writer per run, and a CLI that tells what a stage reads."""
import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MICRO, ROOT, micro_config
from fidan.cli import main
from fidan.config import build_config
from fidan.context import ConfigView, UndeclaredSetting, file_digest
from fidan.errors import FidanError
from fidan.rundir import RunDir, latest
from fidan.stages import BY_NAME, STAGES, stage_hash


def changed_stages(base, other, run_path=None) -> set[str]:
    return {s.name for s in STAGES if stage_hash(base, s.name, run_path) != stage_hash(other, s.name, run_path)}


ALL = {s.name for s in STAGES}
SFT_ON = ALL - {"data", "tokenizer", "tokens", "pretrain", "sample"}   # sft and every stage after it


@pytest.mark.parametrize("override, expected", [
    # execution-only settings: never re-run anything
    ("data.workers=3", set()), ("data.executor=ray", set()), ("data.ray_address=10.0.0.1:6379", set()),
    ("run.device=cpu", set()), ("run.threads=1", set()), ("run.compile=true", set()),
    ("train.log_every=7", set()), ("train.ckpt_every=3", set()), ("rlhf.ckpt_every=3", set()),
    ("train.eval_every=9", set()),
    # a method's sub-settings matter only when that method is chosen
    ("sft.lora.rank=4", set()), ("sft.distill.teacher=elsewhere", set()), ("rlhf.dpo.beta=0.5", set()),
    ("rlhf.grpo.group=4", set()), ("rlhf.grpo.curriculum=word", set()), ("data.minhash_rows=4", ALL),
    # an option's own settings matter only when the option is on (GATE, IGBI, lr scaling)
    ("sft.gate_layers=-2", set()), ("sft.gate_mass=0.5", set()), ("sft.igbi_dev=8", SFT_ON),
    ("sft.igbi_every=4", set()), ("sft.base_batch=64", set()),
    ("sft.gate=1.0", SFT_ON), ("sft.igbi=true", SFT_ON), ("sft.optimizer=lamb", SFT_ON),
    ("sft.corrupt=0.3", SFT_ON), ("sft.context_questions=100", SFT_ON), ("sft.lr_scaling=sqrt", SFT_ON),
    ("sft.one_step_share=0.2", SFT_ON),
    ("sft.reweight=1.0", SFT_ON),   # the old name of sft.loss_reweight
    ("corpus.n_people=20", ALL),
    ("sample.temperature=0.1", {"sample"}),
    ("train.lr=1e-4", ALL - {"data", "tokenizer", "tokens"}),
    ("rlhf.ppo.kl_coef=0.5", {"rlhf", "eval", "report"}),
    ("rlhf.eval_prompts=10", {"reward", "rlhf", "eval", "report"}),   # the reward stage reads it too
    ("reward.harmful_share=0.1", {"reward", "rlhf", "eval", "report"}),
    ("eval.limit=10", {"eval", "report"}), ("eval.onestep_limit=5", {"eval", "report"}),
    ("run.seed=3", ALL),
    ("corpus.realism=web", ALL), ("corpus.realism=demo", set()),   # the default is not hashed: old runs keep theirs
    ("corpus.everyday_share=0.2", ALL), ("corpus.everyday_share=0", set()),   # likewise
])
def test_hash_table(override, expected):
    base = build_config("tiny")
    assert changed_stages(base, build_config("tiny", None, [override])) == expected


def test_chosen_method_hashes_its_settings():
    lora = build_config("tiny", None, ["sft.method=lora"])
    assert changed_stages(lora, build_config("tiny", None, ["sft.method=lora", "sft.lora.rank=4"])) == \
        ALL - {"data", "tokenizer", "tokens", "pretrain", "sample"}
    dpo = build_config("tiny", None, ["rlhf.algo=dpo"])
    assert changed_stages(dpo, build_config("tiny", None, ["rlhf.algo=dpo", "rlhf.dpo.beta=0.5"])) == \
        {"rlhf", "eval", "report"}
    assert changed_stages(dpo, build_config("tiny", None, ["rlhf.algo=dpo", "rlhf.ppo.kl_coef=0.5"])) == set()
    grpo = build_config("tiny", None, ["rlhf.algo=grpo"])
    assert changed_stages(grpo, build_config("tiny", None, ["rlhf.algo=grpo", "rlhf.grpo.advance_at=0.3"])) == \
        {"rlhf", "eval", "report"}
    gate = build_config("tiny", None, ["sft.gate=1.0"])
    assert changed_stages(gate, build_config("tiny", None, ["sft.gate=1.0", "sft.gate_layers=-2"])) == SFT_ON
    igbi = build_config("tiny", None, ["sft.igbi=true"])
    assert changed_stages(igbi, build_config("tiny", None, ["sft.igbi=true", "sft.igbi_every=4"])) == SFT_ON
    no_dedup = build_config("tiny", None, ["data.steps=normalize,pii"])
    assert changed_stages(no_dedup, build_config("tiny", None, ["data.steps=normalize,pii",
                                                                "data.minhash_rows=4"])) == set()


def test_source_content_is_hashed_not_its_path(tmp_path):
    source = tmp_path / "notes.txt"
    source.write_text("Bir varmış, bir yokmuş.\n")
    cfg = build_config("tiny", None, [f"data.source={source}"])
    before = stage_hash(cfg, "data")
    assert stage_hash(cfg, "data") == before
    source.write_text("Once upon a time.\n")
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert stage_hash(cfg, "data") != before
    assert file_digest(tmp_path) != file_digest(tmp_path / "missing")


def test_a_new_labelled_pair_reruns_reward_and_what_reads_it(tmp_path):
    cfg = build_config("tiny", None, [f"run.root={tmp_path}", "run.name=x"])
    run = tmp_path / "x"
    run.mkdir()
    before = {s.name: stage_hash(cfg, s.name, run) for s in STAGES}
    with open(run / "preferences.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "Merhaba", "chosen": "Merhaba!", "rejected": "..."}) + "\n")
    after = {s.name: stage_hash(cfg, s.name, run) for s in STAGES}
    assert {n for n in before if before[n] != after[n]} == {"reward", "rlhf", "eval", "report"}


def test_a_stage_cannot_read_what_it_did_not_declare():
    view = ConfigView(build_config("tiny"), BY_NAME["sample"].allowed(), "sample")
    assert view.sample.temperature == 0.3 and view.data.source == "embedded" and view.run.seed == 1337
    with pytest.raises(UndeclaredSetting, match="'sample' read 'data.steps'"):
        _ = view.data.steps
    with pytest.raises(UndeclaredSetting, match=r"\[train\]"):
        _ = view.train
    with pytest.raises(TypeError):
        view.sample.temperature = 1.0


def test_every_model_load_names_its_device():
    """load_model / load_reward_model / load_for_inference take the device as a required argument;
    every call in the stages passes one, so no model silently stays on the CPU."""
    calls = []
    for path in (ROOT / "src" / "fidan").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                    "load_model", "load_reward_model", "load_for_inference"):
                calls.append((path.name, node.lineno, len(node.args) + len(node.keywords)))
    assert calls
    short = [c for c in calls if c[2] < (3 if "inference" in str(c) else 2)]
    assert short == []


def test_single_stage_overrides_go_to_the_stamp_not_the_config(prepared_run, tmp_path):
    import shutil
    cfg, run = prepared_run
    shutil.copytree(run.path, tmp_path / "micro")
    saved = (tmp_path / "micro" / "config.toml").read_bytes()
    args = [f"--run.root={tmp_path}", "--run.name=micro", "--train.steps=3", "--train.ckpt_every=3"]
    assert main(["pretrain", *args]) == 0
    assert (tmp_path / "micro" / "config.toml").read_bytes() == saved
    stamp = json.loads((tmp_path / "micro" / "stages" / "pretrain.json").read_text())
    assert "train.steps=3" in stamp["overrides"]


def test_latest_run_is_recorded_not_guessed(tmp_path):
    a = RunDir.for_config(micro_config(tmp_path, "a"))
    b = RunDir.for_config(micro_config(tmp_path, "b"))
    assert latest(tmp_path) == b
    os.utime(a.path / "config.toml")          # touching an older run does not make it the latest
    assert latest(tmp_path) == b
    a.mark_latest()
    assert latest(tmp_path) == a
    named = RunDir.for_config(micro_config(tmp_path, "latest"))   # a run may be called "latest"
    assert latest(tmp_path) == named


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path, capsys):
    run = RunDir.for_config(micro_config(tmp_path, "busy"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fidan.rundir import RunDir; r = RunDir(sys.argv[1]);\n"
        "with r.lock('fidan pretrain (the test holder)'):\n    print('held', flush=True); time.sleep(60)"),
        str(run.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["data", f"--run.root={tmp_path}", "--run.name=busy"]) == 2
        err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and "the test holder" in err and "in use" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run.lock("after a crash"):   # the kernel released the dead holder's lock
        assert "after a crash" in (run.path / ".lock").read_text()


def test_stage_help_lists_its_settings(capsys):
    with pytest.raises(SystemExit):
        main(["rlhf", "--help"])
    out = capsys.readouterr().out
    assert "--rlhf.ppo.kl_coef=FLOAT" in out and "per-token KL penalty against the SFT model" in out
    assert "--reward.harmful_share=FLOAT" in out and "[rlhf.ppo]  (used when algo = ppo)" in out
    assert "--data.workers" not in out
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert "--data.workers=INT" in out and "not hashed" in out and "one of local, ray" in out


def test_validation_before_work(tmp_path, capsys):
    assert main(["pipeline", f"--run.root={tmp_path}", "--run.name=v", "--data.steps=normalize,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert not (tmp_path / "v" / "data").exists()


def test_old_setting_names_still_load(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('[train]\ndevice = "cpu"\nthreads = 2\n')
    cfg = build_config(None, str(path))
    assert (cfg.run.device, cfg.run.threads) == ("cpu", 2)
    with pytest.raises(FidanError, match="choose one of"):
        build_config(None, None, ["run.device=tpu"])


@pytest.mark.slow
def test_presets_ship_inside_the_package(tmp_path):
    """Built as a wheel and installed non-editable: the presets come along."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheel_dir), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(wheel_dir.glob("fidan-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", "import fidan, sys; from fidan.cli import main; "
                           "print(fidan.__file__); sys.exit(main(['pipeline', '--preset', 'tiny', '--help']))"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(str(target))
    assert "--model.sparse_every" in done.stdout and "tiny" in done.stdout
    assert build_config("tiny").model.n_layer == 4
    assert MICRO  # the micro settings the other tests use stay importable


def test_a_registered_method_is_all_sft_needs(pretrained_copy):
    """The example of ARCHITECTURE.md: a method registered by name trains through the sft stage
    with nothing else changed (here registered in the test instead of a new file)."""
    from fidan.finetune.methods import Prepared, method, trainable
    from fidan.pipeline import run_stage

    @method("norms-only")
    def prepare(ctx, base):
        for name, p in base.named_parameters():
            p.requires_grad_("norm" in name)
        return Prepared(base, trainable(base))

    from fidan.finetune import methods
    cfg, run = pretrained_copy
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", "sft.method=norms-only", "sft.steps=3")
    try:
        summary = run_stage(cfg, run, "sft")
    finally:
        methods._REGISTRY.pop("norms-only")
    assert summary["method"] == "norms-only"
    assert 0 < summary["trainable_params"] < summary["total_params"] / 50
    with pytest.raises(FidanError, match="choose one of: distill, full, gradual, layers, lora"):
        from fidan.pipeline import check
        check(micro_config(run.path.parent, "micro", "sft.method=nope"), ["sft"])


def test_pipeline_on_an_existing_run_starts_from_its_saved_config(tmp_path):
    """`fidan pipeline --run.name=X` without a preset resumes X as it was configured (overrides on
    top); a new run starts from the defaults."""
    import argparse

    from fidan.cli import _config
    RunDir.for_config(micro_config(tmp_path, "kept", "train.steps=40"))
    args = argparse.Namespace(preset=None, config=None, command="pipeline")
    cfg = _config(args, [f"run.root={tmp_path}", "run.name=kept", "sample.temperature=0.2"])
    assert (cfg.train.steps, cfg.model.d_model, cfg.sample.temperature) == (40, 64, 0.2)
    fresh = _config(args, [f"run.root={tmp_path}", "run.name=new"])
    assert fresh.train.steps == build_config().train.steps


def test_a_stage_that_fails_half_way_leaves_the_previous_outputs_and_stamp(prepared_run, tmp_path, monkeypatch):
    import shutil

    import fidan.data.shards as shards
    from fidan.atomic import file_sha256
    from fidan.pipeline import run_stage
    cfg, run = prepared_run
    shutil.copytree(run.path, tmp_path / "micro")
    run = RunDir(tmp_path / "micro")
    cfg = micro_config(tmp_path)
    stamp = run.stamp("tokens").read_text()
    before = file_sha256(run.path / "data" / "tokens" / "train.bin")

    def half_way(ctx):
        (ctx.out / "train.bin").write_bytes(b"\0" * 6)   # outputs partly rewritten, then a crash
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(shards, "run", half_way)
    with pytest.raises(RuntimeError):
        run_stage(cfg, run, "tokens", overrides=("tokens.anything=1",))
    assert run.stamp("tokens").read_text() == stamp            # the old stamp still describes ...
    assert file_sha256(run.path / "data" / "tokens" / "train.bin") == before   # ... the old outputs
    assert (run.path / ".staging" / "tokens" / "train.bin").stat().st_size == 6
    monkeypatch.undo()
    assert run_stage(cfg, run, "tokens") is not None
    assert file_sha256(run.path / "data" / "tokens" / "train.bin") == before   # same inputs, same shards
    assert not (run.path / ".staging" / "tokens").exists()
    assert run.stage_hash("tokens") == stage_hash(cfg, "tokens", run.path)


def test_a_crash_while_moving_outputs_is_finished_by_the_next_command(prepared_run, tmp_path, monkeypatch):
    """The commit is journaled: killed after moving some entries, the next locked command moves
    the rest and writes the stamp; a nested stage's folder (data/tokens/) survives its parent."""
    import os
    import shutil

    from fidan import staging
    from fidan.pipeline import run_stage
    cfg, run = prepared_run
    shutil.copytree(run.path, tmp_path / "micro")
    run = RunDir(tmp_path / "micro")
    cfg = micro_config(tmp_path)
    tokens_stamp = run.stamp("tokens").read_text()
    real, moves = os.replace, []

    def dies_on_the_third_move(a, b):
        if Path(a).parent == run.path / ".staging" / "data" and Path(b).parent == run.path / "data":
            moves.append(b)
            if len(moves) == 3:
                raise KeyboardInterrupt("killed while moving")
        return real(a, b)

    monkeypatch.setattr(staging.os, "replace", dies_on_the_third_move)
    with pytest.raises(KeyboardInterrupt):
        run_stage(cfg, run, "data")
    monkeypatch.undo()
    assert not run.stamp("data").exists()               # half moved: no stamp claims the folder
    assert (run.path / ".staging" / "data" / staging.COMMIT).exists()
    assert staging.recover(run.path) == ["data"]
    assert run.stage_hash("data") == stage_hash(cfg, "data", run.path)
    assert not (run.path / ".staging" / "data").exists()
    assert run.stamp("tokens").read_text() == tokens_stamp and (run.path / "data" / "tokens" / "meta.json").exists()
    assert run_stage(cfg, run, "data", force=False) is None   # up to date, nothing more to do


def test_summaries_name_the_final_folder(pretrained_copy):
    import json

    from fidan.pipeline import run_stage
    cfg, run = pretrained_copy
    summary = run_stage(cfg, run, "sample")
    assert summary["file"] == str(run.path / "sample" / "samples.txt")
    assert json.loads(run.stamp("sample").read_text())["summary"]["file"] == summary["file"]
    assert (run.path / "sample" / "samples.txt").exists()


def test_review_edge_cases(tmp_path):
    """Explicit sub-table keys beat old flat names in one file; an old run's empty rlhf.out means
    rlhf/; a folder left holding only a lock is still usable; a stage's hash follows what its
    upstream stage really ran with (its stamp), not what config.toml says."""
    path = tmp_path / "mixed.toml"
    path.write_text("[rlhf.grpo]\nepochs = 7\n\n[rlhf]\nepochs = 2\nout = \"\"\n")
    cfg = build_config(None, str(path))
    assert (cfg.rlhf.grpo.epochs, cfg.rlhf.ppo.epochs, cfg.rlhf.out) == (7, 2, "rlhf")
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / ".lock").write_text("")
    RunDir.for_config(micro_config(tmp_path, "fresh"))   # not refused as a foreign folder
    run = RunDir.for_config(micro_config(tmp_path, "stamped"))
    cfg = micro_config(tmp_path, "stamped")
    planned = stage_hash(cfg, "reward", run.path)
    run.mark_done("sft", "made-with-other-settings", {}, ["sft.lr=1e-3"])
    assert stage_hash(cfg, "reward", run.path) != planned
    assert stage_hash(cfg, "reward", run.path) == stage_hash(cfg, "reward", run.path)
