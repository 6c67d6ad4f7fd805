import json

import pytest
import torch

from fidan.config import TrainConfig
from fidan.errors import FidanError
from fidan.finetune import freeze, lora
from fidan.finetune.data import ChatBatches, collate, encode_conversations
from fidan.finetune.formats import load_conversations, to_messages
from fidan.finetune.methods.distill import student_from
from fidan.finetune.objectives import adversarial_term, distillation, example_weights, masked_lm
from fidan.infer.answers import final_number, first_sentence
from fidan.model.gpt import GPT, GPTConfig
from fidan.pipeline import run_stage
from fidan.tokenizer.bpe import train_tokenizer
from fidan.train.loop import make_optimizer


def model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": 64, "context": 32, "n_layer": 3, "n_head": 2, "n_kv_head": 2,
                            "d_model": 16, **kw}))


def steps(m, params, n=3, inputs=None):
    opt = make_optimizer(m, TrainConfig(weight_decay=0.1, lr=1e-2), params)
    x = inputs if inputs is not None else torch.randint(0, 64, (4, 12))
    for _ in range(n):
        m(x).float().logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


# -- formats --------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    {"instruction": "Hi", "input": "", "output": "Hello"},
    {"prompt": "Hi", "completion": "Hello"},
])
def test_every_format_becomes_messages(row):
    assert to_messages(row) == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def test_alpaca_input_is_appended():
    msgs = to_messages({"instruction": "Translate", "input": "Merhaba", "output": "Hello"})
    assert msgs[0]["content"] == "Translate\n\nMerhaba"


def test_malformed_rows_are_reported_with_line_numbers(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"foo": 1}\nnot json\n'
                    '{"messages": [{"role": "user", "content": "only a question"}]}\n')
    with pytest.raises(FidanError, match=r"data\.jsonl:2: unknown format"):
        load_conversations(str(path))
    from fidan.data.sources import SourceReport
    report = SourceReport()
    assert len(load_conversations(str(path), on_error="skip", report=report)) == 1
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in report.problems] == ["2", "3", "4"]
    assert "no assistant turn" in report.problems[2]


def test_published_json_arrays_load_with_per_format_counts(tmp_path):
    import gzip
    import json
    folder = tmp_path / "instructions"
    folder.mkdir()
    alpaca = [{"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."},
              {"instruction": "Translate", "input": "Merhaba", "output": "Hello"}]
    (folder / "alpaca_data.json").write_text(json.dumps(alpaca, indent=4))   # as Stanford published it
    sharegpt = [{"id": "x1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                               {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye!"}]}]
    with gzip.open(folder / "sharegpt.json.gz", "wt") as f:
        json.dump(sharegpt, f)
    (folder / "chat.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (folder / "notes.txt").write_text("not instruction data")
    counts = {}
    conversations = load_conversations(str(folder), counts=counts)
    assert counts == {"alpaca": 2, "sharegpt": 1, "completion": 1} and len(conversations) == 4
    assert conversations[0] == [{"role": "user", "content": "Give three tips for staying healthy."},
                                {"role": "assistant", "content": "Eat well."}]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([alpaca[0], {"instruction": "no output"}]))
    with pytest.raises(FidanError, match=r"bad\.json: item 2: Alpaca rows need"):
        load_conversations(str(bad))
    lines = tmp_path / "lines.json"
    lines.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n')
    with pytest.raises(FidanError, match=r"lines\.json: not valid JSON .*should be named \.jsonl"):
        load_conversations(str(lines))
    with pytest.raises(FidanError, match=r"notes\.txt: instruction data must be .jsonl or a .json array"):
        load_conversations(str(folder / "notes.txt"))


# -- batches ---------------------------------------------------------------------------------------
def test_batches_mask_only_assistant_tokens_and_pad_right():
    tok = train_tokenizer(["hello there friend"] * 10, vocab_size=300)
    convs = [[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "there friend"}],
             [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]]
    examples = encode_conversations(tok, convs, 64)
    x, y, m = collate(examples, tok.pad)
    assert tok.decode(y[0][m[0]].tolist()) == "there friend<|end|>"
    assert tok.decode(y[1][m[1]].tolist()) == "x<|end|>"
    assert not m[1][y[1] == tok.pad].any()
    batches = ChatBatches(examples, 4, tok.pad, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(batches(5, 0), batches(5, 0)))


# -- choosing what trains ------------------------------------------------------------------------
def test_chosen_layers_train_and_the_rest_stay_bit_identical():
    m = model()
    freeze.train_only(m, freeze.select(m, "-1,lm_head"))
    before = {n: p.clone() for n, p in m.named_parameters()}
    steps(m, [p for p in m.parameters() if p.requires_grad])
    for n, p in m.named_parameters():
        changed = not torch.equal(before[n], p)
        assert changed == (n.startswith("blocks.2.") or n.startswith("lm_head")), n
    with pytest.raises(FidanError, match="block 7 does not exist"):
        freeze.select(m, "7")
    with pytest.raises(FidanError, match="matches no parameter"):
        freeze.select(m, "nonexistent")


def test_gradual_unfreezing_thaws_from_the_top():
    m = model()
    thaw = freeze.GradualUnfreezing(m, every=2)
    trainable = lambda: {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
                         for n, p in m.named_parameters() if p.requires_grad}
    thaw(0)
    assert trainable() == {"lm_head", "norm", "blocks.2"}
    thaw(2)
    assert trainable() == {"lm_head", "norm", "blocks.2", "blocks.1"}
    thaw(4)
    assert trainable() == {"lm_head", "norm", "blocks.2", "blocks.1", "blocks.0", "embed"}
    m2 = model()
    thaw2 = freeze.GradualUnfreezing(m2, every=100)
    thaw2(0)
    embed_before = m2.embed.weight.clone()
    steps(m2, list(m2.parameters()))
    assert torch.equal(embed_before, m2.embed.weight)  # not thawed yet: untouched, weight decay included


# -- LoRA -------------------------------------------------------------------------------------------
def test_lora_starts_at_the_base_trains_only_adapters_and_merges(tmp_path):
    m = model()
    x = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        base_out = m(x)
    wrapped = lora.apply_lora(m, rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"])
    assert len(wrapped) == 6
    with torch.no_grad():
        assert torch.allclose(m(x), base_out)  # B = 0
    frozen = {n: p.clone() for n, p in m.named_parameters() if "lora_" not in n}
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 6 * 4 * (16 + 16)
    steps(m, trainable, inputs=x)
    assert all(torch.equal(frozen[n], p) for n, p in m.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        adapted = m(x)
        assert not torch.allclose(adapted, base_out)
        lora.merge_all(m)
        assert torch.allclose(m(x), adapted, atol=1e-5)
        lora.unmerge_all(m)
        assert torch.allclose(m(x), adapted, atol=1e-5)
        assert all(torch.allclose(frozen[n], p, atol=1e-6) for n, p in m.named_parameters() if "lora_" not in n)
    lora.save_adapters(m, tmp_path, {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]})
    assert (tmp_path / "adapter.safetensors").stat().st_size < 10_000
    fresh = model()
    lora.load_adapters(fresh, tmp_path)
    with torch.no_grad():
        assert torch.allclose(fresh(x), adapted, atol=1e-5)
    lora.strip(fresh)
    assert not lora.lora_modules(fresh)
    with torch.no_grad():
        assert torch.allclose(fresh(x), adapted, atol=1e-5)


# -- prompt tuning --------------------------------------------------------------------------------
def test_soft_prompt_trains_alone_and_works_with_the_cache():
    m = model(prompt_tokens=4)
    freeze.freeze_all(m)
    m.soft_prompt.requires_grad_(True)
    frozen = {n: p.clone() for n, p in m.named_parameters() if n != "soft_prompt"}
    prompt_before = m.soft_prompt.clone()
    steps(m, [m.soft_prompt])
    assert not torch.equal(prompt_before, m.soft_prompt)
    assert all(torch.equal(frozen[n], p) for n, p in m.named_parameters() if n != "soft_prompt")
    x = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        full = m(x)
        assert full.shape == (1, 12, 64)
        cache = m.new_cache(1)
        parts = [m(x[:, :5], cache)] + [m(x[:, i:i + 1], cache) for i in range(5, 12)]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)
    assert cache.pos == 4 + 12


# -- distillation, reweighting, adversarial --------------------------------------------------------
def test_distillation_loss_matches_its_formula():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    y = torch.randint(0, 11, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    T, alpha = 2.0, 0.3
    q = torch.softmax(t / T, -1)
    kl = (q * (q.log() - torch.log_softmax(s / T, -1))).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(s.view(-1, 11), y.view(-1))
    expected = (alpha * T * T * kl + (1 - alpha) * ce).item()
    assert distillation(s, t, y, mask, T, alpha).item() == pytest.approx(expected, rel=1e-5)
    assert distillation(t, t, y, mask, T, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_student_cut_from_the_teacher():
    teacher = model(n_layer=4)
    same = student_from(teacher, 4)
    x = torch.randint(0, 64, (1, 8))
    with torch.no_grad():
        assert torch.allclose(same(x), teacher(x))
    small = student_from(teacher, 2)
    assert small.cfg.n_layer == 2
    assert torch.equal(small.blocks[1].mlp.up_proj.weight, teacher.blocks[3].mlp.up_proj.weight)
    assert torch.equal(small.blocks[0].mlp.up_proj.weight, teacher.blocks[0].mlp.up_proj.weight)


def test_reweighting_emphasises_hard_examples():
    w = example_weights(torch.tensor([0.5, 1.0, 3.0]), temperature=1.0)
    assert w.sum().item() == pytest.approx(3.0) and w[2] > w[1] > w[0]
    logits = torch.randn(3, 4, 7)
    y = torch.randint(0, 7, (3, 4))
    mask = torch.ones(3, 4, dtype=torch.bool)
    plain = masked_lm(logits, y, mask)
    assert masked_lm(logits, y, mask, reweight=1e6).item() == pytest.approx(plain.item(), rel=1e-4)
    assert masked_lm(logits, y, mask, reweight=0.1).item() > plain.item()


def test_adversarial_term_is_positive_and_trains_the_model():
    m = model()
    x = torch.randint(0, 64, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    term = adversarial_term(m, x, m(x), mask, epsilon=0.5)
    assert term.item() > 0
    term.backward()
    assert m.blocks[0].attn.q_proj.weight.grad is not None


def test_answer_scoring_helpers():
    assert first_sentence(". Ayla is a baker. She lives in Karmilo.") == "Ayla is a baker."
    assert final_number("12 * 4 = 48. The answer is 48.\n#### 48") == 48
    assert final_number("so 1,200 in total") == 1200 and final_number("no idea") is None


# -- stages, end to end on the micro run ---------------------------------------------------------
@pytest.mark.slow
def test_sft_stage_and_lora_method(pretrained_copy):
    cfg, run = pretrained_copy
    cfg.sft.pretrain_mix = 0.0   # the logged loss is then the conversations' alone (the mix: test_sft_keep.py)
    summary = run_stage(cfg, run, "sft")
    assert (run.path / "sft" / "model.safetensors").exists()
    losses = [json.loads(line)["loss"] for line in (run.path / "sft" / "metrics.jsonl").read_text().splitlines()
              if "loss" in line]
    assert losses[-1] < losses[0]
    for key in ("base_facts_acc", "sft_facts_acc", "base_math_acc", "sft_math_acc", "trainable_params"):
        assert key in summary
    cfg.sft.method, cfg.sft.out = "lora", "sft-lora"
    result = run_stage(cfg, run, "sft")
    assert result["trainable_params"] < summary["trainable_params"] / 5
    assert (run.path / "sft-lora" / "adapter.safetensors").exists()
    from fidan.model.io import load_model
    load_model(run.path / "sft-lora", "cpu")  # the merged model loads as a plain GPT


@pytest.mark.slow
def test_classifier_head_learns_sentiment(pretrained_copy, capsys):
    cfg, run = pretrained_copy
    result = run_stage(cfg, run, "classify")
    assert result["test_accuracy"] > result["majority_baseline"] + 0.2
    assert result["test_accuracy"] > result["untrained_accuracy"]
    # the held-out reviews are a keyword test: a bag of words trained on the same reviews aces them,
    # and fails on the hard ones (negation, contrast, irony, unseen words), reported beside the head
    assert result["bow_test_accuracy"] >= 0.95
    assert result["bow_hard"]["share"] < 0.65 and result["bow_hard"]["n"] == result["head_hard"]["n"] >= 150
    assert result["bow_hard_by_kind"]["negation"] < 0.2   # "not wonderful" reads as wonderful
    assert set(result["head_hard_by_kind"]) == {"negation", "contrast", "irony", "unseen words"}
    # a user's own sentences: the trained head's probabilities, printed without training again
    from fidan.cli import main
    from fidan.finetune.classify import load_classifier, probabilities
    from fidan.tokenizer.bpe import FidanTokenizer
    texts = [json.loads(x)["text"] for x in (run.path / "data" / "sentiment" / "test.jsonl").read_text().splitlines()]
    labels = [json.loads(x)["label"] for x in (run.path / "data" / "sentiment" / "test.jsonl").read_text().splitlines()]
    probs = probabilities(load_classifier(run.path / "classify", "cpu"), FidanTokenizer.load(
        run.path / "tokenizer" / "tokenizer.json"), texts)
    assert sum((p >= 0.5) == bool(y) for p, y in zip(probs, labels)) / len(texts) == result["test_accuracy"]
    capsys.readouterr()
    assert main(["classify", "--text", texts[0], "--text", "Ne harika bir gol yedik",
                 f"--run.root={run.path.parent}", f"--run.name={run.path.name}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith(f"P(positive) {probs[0]:.3f}") and out[1].endswith("gol yedik")


@pytest.mark.slow
def test_methods_table_runs_children_with_this_commands_settings(pretrained_copy):
    from fidan.commands.methods import compare
    cfg, run = pretrained_copy
    run_stage(cfg, run, "sft")  # the distillation teacher
    cfg.sft.steps = 7  # an override given on the command line, not in the run's config.toml
    rows = compare(cfg, run, ["lora", "classify"])
    assert [r["method"] for r in rows] == ["lora", "classify"]
    assert all(r["peak_rss_mb"] > 50 and r["wall_seconds"] > 0 for r in rows)
    table = json.loads((run.path / "sft" / "methods.json").read_text())
    assert len(table["methods"]) == 2
    lora_metrics = (run.path / "sft" / "methods" / "lora" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lora_metrics[-1])["step"] == 7
