import pytest

from fidan.config import PRESET_DIR, build_config, load_toml, to_toml
from fidan.errors import FidanError


@pytest.mark.parametrize("preset", ["tiny", "small", "gpt2-124m", "shakespeare"])
def test_presets_load(preset):
    cfg = build_config(preset)
    assert cfg.model.d_model % cfg.model.n_head == 0


def test_overrides_are_typed():
    cfg = build_config("tiny", None, ["train.lr=1e-4", "model.n_layer=6", "model.qk_norm=true",
                                      "data.source=/tmp/x.txt"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.model.n_layer == 6 and cfg.model.qk_norm is True
    assert cfg.data.source == "/tmp/x.txt"


@pytest.mark.parametrize("override, words", [
    ("train.lrr=1", ["train.lrr", "known"]),
    ("nosuch.key=1", ["nosuch"]),
    ("model.n_layer=six", ["model.n_layer", "integer"]),
    ("model.qk_norm=maybe", ["true/false"]),
    ("train.schedule=zigzag", ["cosine"]),
    ("train.steps", ["section.key=value"]),
])
def test_bad_overrides_name_the_problem(override, words):
    with pytest.raises(FidanError) as e:
        build_config("tiny", None, [override])
    assert all(w in str(e.value) for w in words)


def test_unknown_key_in_file_names_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlearning_rate = 3\n")
    with pytest.raises(FidanError, match=r"c\.toml.*train\.learning_rate"):
        build_config(None, str(path))


def test_invalid_toml_and_unknown_preset(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\n")
    with pytest.raises(FidanError, match="not valid TOML"):
        build_config(None, str(path))
    with pytest.raises(FidanError, match="unknown preset 'huge'.*tiny"):
        build_config("huge")


def test_hash_is_stable_and_ignores_execution_settings():
    a = build_config("tiny")
    assert a.section_hash("model", "train") == build_config("tiny").section_hash("train", "model")
    assert a.section_hash("train") == build_config("tiny", None, ["run.threads=1"]).section_hash("train")
    assert a.section_hash("train") != build_config("tiny", None, ["train.lr=1e-5"]).section_hash("train")


def test_saved_config_reloads_identically(tmp_path):
    cfg = build_config("tiny", None, ["sample.prompt=Soru: \"İyi\" ğüşöç"])
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert build_config(None, str(path)) == cfg
    assert load_toml(path)["sample"]["prompt"] == 'Soru: "İyi" ğüşöç'


def test_presets_exist_for_the_documented_names():
    assert {"tiny", "small", "gpt2-124m"} <= {p.stem for p in PRESET_DIR.glob("*.toml")}


def test_stage_hashes_follow_real_dependencies():
    from fidan.stages import STAGES, stage_hash
    base = build_config("tiny")
    changed = build_config("tiny", None, ["sample.temperature=0.1"])
    differs = {s.name for s in STAGES if stage_hash(base, s.name) != stage_hash(changed, s.name)}
    assert differs == {"sample"}
    retrained = build_config("tiny", None, ["train.lr=1e-4"])
    assert {s.name for s in STAGES if stage_hash(base, s.name) != stage_hash(retrained, s.name)} == \
        {"pretrain", "sample", "sft", "reward", "rlhf", "eval", "report"}
    tuned = build_config("tiny", None, ["rlhf.ppo.kl_coef=0.5"])
    assert {s.name for s in STAGES if stage_hash(base, s.name) != stage_hash(tuned, s.name)} == \
        {"rlhf", "eval", "report"}   # the reward model is not retrained for a new KL coefficient
    reseeded = build_config("tiny", None, ["run.seed=3"])
    assert all(stage_hash(base, s.name) != stage_hash(reseeded, s.name) for s in STAGES)


def test_an_override_that_changes_nothing_says_so(capsys):
    """--rlhf.steps with DPO (it reads rlhf.dpo.steps), a LoRA rank without LoRA: a note on
    stderr naming the setting and what it waits for; one that applies says nothing."""
    build_config("tiny", None, ["rlhf.algo=dpo", "--rlhf.steps=5", "sft.lora.rank=4"])
    notes = capsys.readouterr().err.splitlines()
    assert notes == ["fidan: note: 'rlhf.steps' has no effect: it is used only when rlhf.algo = ppo or grpo",
                     "fidan: note: 'sft.lora.rank' has no effect: it is used only when sft.method = lora"]
    build_config("tiny", None, ["rlhf.algo=dpo", "rlhf.dpo.steps=5", "sft.method=lora", "sft.lora.rank=4",
                                "corpus.everyday_share=0"])   # unhashed at 0, but not inert
    assert capsys.readouterr().err == ""
