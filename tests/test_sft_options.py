"""The SFT options of issue 18: GATE (guided attention), gradient-based instance reweighting
(IGBI) and LAMB, plus the settings they bring."""
import pytest
import torch
import torch.nn.functional as F

from fidan.config import TrainConfig, build_config
from fidan.errors import FidanError
from fidan.finetune.data import collate, encode_conversations, plant_wrong_answers
from fidan.finetune.gate import AttentionGuide
from fidan.finetune.igbi import GradientReweighting, per_example_loss, weighted_lm
from fidan.model.gpt import GPT, GPTConfig, recorded_attention
from fidan.pipeline import run_stage
from fidan.tokenizer.bpe import train_tokenizer
from fidan.train.lamb import Lamb
from fidan.train.loop import make_optimizer

V = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{"vocab_size": V, "context": 32, "n_layer": 2, "n_head": 2, "n_kv_head": 2,
                            "d_model": 32, **kw}))


# -- the explicit attention path -----------------------------------------------------------------
@pytest.mark.parametrize("banded", [False, True])
def test_recorded_attention_gives_the_fused_paths_output_and_its_probabilities(banded):
    m = model(**({"sparse_every": 2, "window": 4} if banded else {}))
    x = torch.randint(0, V, (3, 12))
    fused = m(x)
    with recorded_attention(m, [0, 1]) as probs:
        explicit = m(x)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert set(probs) == {0, 1} and probs[1].shape == (3, 2, 12, 12)
    assert torch.allclose(probs[1].sum(-1), torch.ones(3, 2, 12))
    assert probs[0].triu(1).abs().max() == 0                     # causal
    if banded:
        assert probs[1][..., 11, :11 - 4 + 1].abs().max() == 0   # the band: 4 keys back at most
    assert all(blk.attn.record is None for blk in m.blocks)      # the fused path is back


# -- GATE ----------------------------------------------------------------------------------------
def test_gate_raises_attention_mass_on_the_marked_span():
    torch.manual_seed(1)
    x = torch.randint(0, V, (8, 16))
    y = torch.randint(0, V, (8, 16))
    answer = torch.zeros(8, 16, dtype=torch.bool)
    answer[:, 12:] = True
    evidence = torch.zeros(8, 16, dtype=torch.bool)
    evidence[:, 3:6] = True
    guide = AttentionGuide("-1", "all", 0.9, model().cfg)

    def mass_after(weight):
        m = model()
        opt = make_optimizer(m, TrainConfig(lr=3e-3))
        for _ in range(25):
            with recorded_attention(m, guide.layers) as probs:
                logits = m(x)
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1)) + weight * guide.loss(probs, answer, evidence)
            loss.backward()
            opt.step()
            opt.zero_grad()
        with torch.no_grad(), recorded_attention(m, guide.layers) as probs:
            m(x)
        return guide.span_mass(probs, evidence)[:, :, 12:].mean().item()

    without, with_gate = mass_after(0.0), mass_after(1.0)
    assert with_gate > 0.5 > without + 0.2


def test_gate_term_is_zero_once_the_target_mass_is_reached_and_bad_layers_are_named():
    one = GPTConfig(vocab_size=V, n_layer=1, n_head=2, n_kv_head=2, d_model=32)
    guide = AttentionGuide("0", "1", 0.5, one)
    probs = torch.zeros(1, 2, 4, 4)
    probs[..., 0] = 1.0                                  # everything on key 0
    evidence = torch.tensor([[True, False, False, False]])
    answer = torch.ones(1, 4, dtype=torch.bool)
    assert guide.loss({0: probs}, answer, evidence).item() == pytest.approx(0.0, abs=1e-5)
    assert guide.loss({0: probs}, answer, ~evidence).item() > 1.0
    with pytest.raises(FidanError, match="the model has 1 blocks and 2 heads"):
        AttentionGuide("3", "all", 0.9, one)
    with pytest.raises(FidanError, match="sft.gate_heads"):
        AttentionGuide("0", "x", 0.9, one)
    banded = GPTConfig(vocab_size=V, n_layer=4, n_head=2, n_kv_head=2, d_model=32, sparse_every=2, window=8)
    assert AttentionGuide("dense", "all", 0.9, banded).layers == [2]   # blocks 1 and 3 are banded


def test_evidence_is_mapped_onto_its_tokens():
    tok = train_tokenizer(["the river flows through Karmilo. Nehir akar."] * 20, vocab_size=300)
    convs = [[{"role": "user", "content": "Nehir akar. The river flows through Karmilo.\n\nWhich river?",
               "evidence": "The river flows through Karmilo."},
              {"role": "assistant", "content": "The river flows through Karmilo."}]]
    ex = encode_conversations(tok, convs, 64)[0]
    assert tok.decode(ex.ids[ex.span[0]:ex.span[1]]).strip() == "The river flows through Karmilo."
    assert ex.span[1] <= ex.mask.index(True)             # in the user turn, not the reply
    *_, evidence = collate([ex], tok.pad, spans=True)
    assert evidence[0].sum() == ex.span[1] - ex.span[0]


# -- IGBI ----------------------------------------------------------------------------------------
def test_planted_wrong_answers_take_another_conversations_answer_and_spare_the_kept():
    convs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(50)]
    out, bad = plant_wrong_answers(convs, 0.3, seed=0, keep={0, 1, 2})
    assert len(bad) == round(0.3 * 47) and not bad & {0, 1, 2}
    for i, c in enumerate(out):
        assert (c[1]["content"] != f"a{i}") == (i in bad) and c[0] == convs[i][0]
    assert plant_wrong_answers(convs, 0.3, seed=0, keep={0, 1, 2})[1] == bad   # seeded


def _rule_batch(n, corrupt=(), seed=0):
    """Sequences whose next token is always the current one plus 1; rows in ``corrupt`` random."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (n, 12), generator=g)
    y = (x + 1) % V
    for i in corrupt:
        y[i] = torch.randint(0, V, (12,), generator=g)
    return x, y, torch.ones(n, 12, dtype=torch.bool)


def test_igbi_agreement_is_the_exact_gradient_dot_product():
    m = model()
    params = [p for p in m.parameters()]
    x, y, mask = _rule_batch(4)
    rw = GradientReweighting(_rule_batch(6, seed=1), params, every=1)
    rw.refresh(m)
    dots = rw.agreement(m, x, y, mask)
    for i in range(4):
        g = torch.autograd.grad(per_example_loss(m(x[i:i + 1]), y[i:i + 1], mask[i:i + 1]).sum(), params)
        assert dots[i].item() == pytest.approx(sum((a * b).sum() for a, b in zip(g, rw.dev_grad)).item(), rel=1e-3)


def test_igbi_gives_planted_wrong_labels_less_weight_than_clean_ones():
    m = model()
    opt = make_optimizer(m, TrainConfig(lr=3e-3))
    for step in range(30):  # a little training on the rule, as SFT starts from a model that knows something
        x, y, mask = _rule_batch(16, seed=100 + step)
        per_example_loss(m(x), y, mask).mean().backward()
        opt.step()
        opt.zero_grad()
    bad = list(range(0, 16, 3))
    flags = torch.zeros(16, dtype=torch.bool)
    flags[bad] = True
    rw = GradientReweighting(_rule_batch(8, seed=7), list(m.parameters()), every=2, corrupted=flags)
    for step in range(4):
        x, y, mask = _rule_batch(16, bad, seed=step)
        w = rw.weights(m, x, y, mask, torch.arange(16), step)
        assert w.mean().item() == pytest.approx(1.0, rel=1e-4)
        weighted_lm(m(x), y, mask, w).backward()     # the weighted loss trains like any other
    means = rw.summary()
    assert means["igbi_mean_weight_corrupted"] < 0.5 * means["igbi_mean_weight_clean"]


# -- LAMB ----------------------------------------------------------------------------------------
def test_lamb_moves_every_tensor_by_lr_times_its_norm():
    m = model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    x = torch.randint(0, V, (4, 12))
    opt = make_optimizer(m, TrainConfig(lr=0.01, weight_decay=0.1), kind="lamb")
    assert isinstance(opt, Lamb)
    m(x).logsumexp(-1).mean().backward()
    opt.step()
    ratios = {n: ((p.detach() - before[n]).norm() / before[n].norm()).item() for n, p in m.named_parameters()}
    assert all(r == pytest.approx(0.01, rel=1e-3) for r in ratios.values()), ratios
    adam = model()
    before = {n: p.detach().clone() for n, p in adam.named_parameters()}
    opt = make_optimizer(adam, TrainConfig(lr=0.01))
    adam(x).logsumexp(-1).mean().backward()
    opt.step()
    spread = [((p.detach() - before[n]).norm() / before[n].norm()).item() for n, p in adam.named_parameters()]
    assert max(spread) > 3 * min(spread)                # AdamW's relative steps differ by layer


# -- settings ------------------------------------------------------------------------------------
def test_old_reweight_name_still_sets_the_loss_softmax_option(capsys):
    cfg = build_config("tiny", None, ["sft.reweight=0.5"])
    assert cfg.sft.loss_reweight == 0.5
    assert "'sft.reweight' is now 'sft.loss_reweight'" in capsys.readouterr().err
    from fidan.finetune.sft import check, scaled_lr
    with pytest.raises(FidanError, match="does not combine with sft.loss_reweight"):
        check(build_config("tiny", None, ["sft.igbi=true", "sft.loss_reweight=1"]))
    big = build_config("tiny", None, ["sft.batch_size=128", "sft.lr_scaling=sqrt", "sft.base_batch=16"])
    assert scaled_lr(big.sft) == pytest.approx(big.sft.lr * 8 ** 0.5)


# -- the stage, end to end on the micro run ------------------------------------------------------
@pytest.mark.slow
def test_sft_stage_with_igbi_gate_and_lamb(pretrained_copy):
    cfg, run = pretrained_copy
    s = cfg.sft
    s.corrupt, s.igbi, s.igbi_dev, s.gate, s.context_questions, s.optimizer = 0.4, True, 16, 1.0, 120, "lamb"
    s.out = "sft-options"
    summary = run_stage(cfg, run, "sft")
    # 400 world conversations + 120 with-context ones; the 16 dev conversations are never corrupted
    assert summary["corrupted"] == round(0.4 * (400 + 120 + cfg.sft.lookalikes - 16))
    assert {"igbi_mean_weight_corrupted", "igbi_mean_weight_clean"} <= set(summary)  # (the ordering: above)
    assert summary["context_n"] == cfg.sft.eval_items and summary["context_attention_mass"] > 0
    state = torch.load(run.path / "sft-options" / "ckpt" / f"step_{s.steps:07d}" / "state.pt", weights_only=False)
    ratios = [v["trust_ratio"] for v in state["optimizer"]["state"].values()]   # LAMB ran the steps
    assert len(ratios) == len(state["optimizer"]["state"]) > 10


# -- layer-wise lr decay (sft.lr_decay) ------------------------------------------------------------
def test_layer_lr_decay_moves_each_block_by_its_own_lr():
    from fidan.finetune.layer_lr import decayed_adamw
    m = model(n_layer=3)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = decayed_adamw(m, list(m.parameters()), 0.5, 1e-2, 0.0, (0.9, 0.95))
    x = torch.randint(0, V, (4, 12))
    F.cross_entropy(m(x).flatten(0, 1), torch.roll(x, -1, 1).flatten()).backward()
    opt.step()   # Adam's first step moves every element with a gradient by the lr, whatever its size
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in m.named_parameters()}
    assert moved["blocks.2.attn.q_proj.weight"] == pytest.approx(1e-2, rel=1e-3)
    assert moved["blocks.1.attn.q_proj.weight"] == pytest.approx(5e-3, rel=1e-3)
    assert moved["blocks.0.mlp.up_proj.weight"] == pytest.approx(2.5e-3, rel=1e-3)
    assert moved["embed.weight"] == pytest.approx(1.25e-3, rel=1e-3)
    assert moved["lm_head.weight"] == pytest.approx(1e-2, rel=1e-3)


def test_sft_stage_with_layer_lr_decay_keeps_the_embedding(pretrained_copy):
    from fidan.model.io import load_model
    cfg, run = pretrained_copy
    cfg.sft.steps, cfg.sft.lr_decay, cfg.sft.out = 4, 1e-6, "sft-decay"
    run_stage(cfg, run, "sft")
    base, _ = load_model(run.path / "pretrain", "cpu")
    tuned, _ = load_model(run.path / "sft-decay", "cpu")
    change = lambda name: (tuned.state_dict()[name] - base.state_dict()[name]).abs().max().item()
    top = len(base.blocks) - 1
    assert change("embed.weight") < 1e-6 * cfg.sft.lr * cfg.sft.steps * 2
    assert change(f"blocks.{top}.attn.q_proj.weight") > cfg.sft.lr / 2
    cfg.sft.optimizer = "lamb"
    with pytest.raises(FidanError, match="sft.lr_decay"):
        run_stage(cfg, run, "sft")


def test_neftune_noise_is_bounded_training_only_and_removed_after():
    from fidan.finetune.neftune import noisy_embeddings
    m = model()
    x = torch.randint(0, V, (2, 16))
    clean = m.embed(x).detach()
    with noisy_embeddings(m, 5.0):
        noisy = m.embed(x).detach()
        m.eval()
        assert torch.equal(m.embed(x), clean)   # scoring sees clean embeddings
        m.train()
    bound = 5.0 / (16 * 32) ** 0.5
    assert 0.5 * bound < (noisy - clean).abs().max() <= bound
    assert torch.equal(m.embed(x), clean)       # the hook is gone after training


def test_sft_stage_with_wise_saves_the_blend_of_tuned_and_pretrained(pretrained_copy):
    from fidan.model.io import load_model
    cfg, run = pretrained_copy
    cfg.sft.steps, cfg.sft.out = 4, "sft-full"
    run_stage(cfg, run, "sft")
    cfg.sft.wise, cfg.sft.out = 0.25, "sft-wise"
    summary = run_stage(cfg, run, "sft")
    base = load_model(run.path / "pretrain", "cpu")[0].state_dict()
    tuned = load_model(run.path / "sft-full", "cpu")[0].state_dict()
    blend = load_model(run.path / "sft-wise", "cpu")[0].state_dict()
    key = "blocks.0.attn.q_proj.weight"
    assert not torch.allclose(tuned[key], base[key])
    for k in base:
        assert torch.allclose(blend[k], base[k] + 0.25 * (tuned[k] - base[k]), atol=1e-6), k
    assert "sft_facts_acc" in summary   # the blend is what the stage scored
    cfg.sft.method = "prompt"
    with pytest.raises(FidanError, match="sft.wise"):
        run_stage(cfg, run, "sft")


def test_layer_lr_decay_names_the_settings_it_does_not_combine_with():
    from fidan.finetune import sft
    sft.check(build_config(None, None, ["sft.lr_decay=0.5"]))   # alone it is fine
    for other in ("sft.optimizer=lamb", "train.parallel=fsdp"):
        with pytest.raises(FidanError, match=f"sft.lr_decay=0.5 .*{other.split('=')[0]}"):
            sft.check(build_config(None, None, ["sft.lr_decay=0.5", other]))
