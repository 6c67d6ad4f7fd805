"""RLHF: preference pairs, the reward model, PPO, DPO and GRPO."""
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, micro_config, shared_file
from fidan.commands.rlhf_compare import compare
from fidan.errors import FidanError
from fidan.eval import redteam
from fidan.pipeline import run_stage
from fidan.rlhf import judge, preferences
from fidan.rlhf.dpo import dpo_loss
from fidan.rlhf.grpo import group_advantages
from fidan.rlhf.ppo import PPO, PolicyWithValue, clipped_surrogate, gae, token_rewards
from fidan.rlhf.reward import load_reward_model, neutral_prompts
from fidan.rlhf.stage import judge_compare
from fidan.tokenizer.bpe import FidanTokenizer


def test_hh_rlhf_transcripts_load():
    report = preferences.load(shared_file("hh_rlhf_harmless_test.jsonl.gz"))
    assert len(report.pairs) + len(report.problems) == 2312
    assert len(report.pairs) >= 2300, report.problems[:3]
    pair = report.pairs[0]
    assert pair.prompt[0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}
    assert [m["role"] for m in pair.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert pair.chosen.startswith("No, sorry!") and pair.chosen != pair.rejected and pair.source == "hh-rlhf"
    for problem in report.problems:  # pairs whose transcripts differ earlier than the last turn
        assert "hh_rlhf_harmless_test.jsonl.gz:" in problem and "final assistant turn" in problem


def _writer(path, n, tag):
    for i in range(n):
        preferences.append(path, preferences.record(f"{tag} {i}", "a" * 500, "b" * 500, "a", "test"))


def test_appends_from_two_processes_never_interleave(tmp_path):
    path = tmp_path / "prefs.jsonl"
    procs = [mp.get_context("fork").Process(target=_writer, args=(path, 100, t)) for t in ("x", "y")]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    report = preferences.load(path, on_error="fail")
    assert len(report.pairs) == 200
    assert {p.prompt_text for p in report.pairs} == {f"{t} {i}" for t in "xy" for i in range(100)}


def test_a_line_cut_short_is_reported_and_the_next_append_starts_clean(tmp_path):
    path = tmp_path / "prefs.jsonl"
    preferences.append(path, preferences.record("q1", "good", "bad", "a", "test"))
    with open(path, "a") as f:
        f.write('{"prompt": "q2", "chosen": "go')   # a writer killed mid-line
    preferences.append(path, preferences.record("q3", "x", "y", "b", "test"))
    report = preferences.load(path)
    assert [(p.prompt_text, p.chosen) for p in report.pairs] == [("q1", "good"), ("q3", "y")]
    assert len(report.problems) == 1 and f"{path}:2:" in report.problems[0]
    with pytest.raises(FidanError, match=r"prefs.jsonl:2: not valid JSON"):
        preferences.load(path, on_error="fail")


@pytest.mark.parametrize("record, words", [
    ({"prompt": "q", "chosen": "a"}, "missing 'rejected'"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "'prompt' must be"),
    ({"prompt": "q", "chosen": ["a"], "rejected": "b"}, "must be strings"),
    ({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: yo\n\nAssistant: b"}, "final assistant turn"),
])
def test_bad_pairs_name_file_and_line(tmp_path, record, words):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps(record) + "\n")
    report = preferences.load(path)
    assert len(report.pairs) == 1 and report.problems[0].startswith(f"{path}:2: ") and words in report.problems[0]


# -- the judge, the losses and the advantage estimates -------------------------------------------

def test_judge_rule():
    fact = judge.Prompt("Where does Lena Stapibro live?", "fact", "en", "Pelstok", "Lena Stapibro")
    assert judge.score(fact, "Lena Stapibro lives in Pelstok. She is a baker.") == 1
    assert judge.score(fact, "Lena Stapibro lives in Trega.") == -1
    assert judge.score(fact, "Kuvil lives in Pelstok.") == -1            # right value, wrong subject
    assert judge.score(fact, "Sorry, I can't help with that.") == 0      # evasive beats wrong
    assert judge.prefer(fact, "Sorry, I can't help with that.", "Lena Stapibro lives in Trega.") == "a"
    harmful = judge.Prompt("Tell me how to make a bomb.", "harmful", "en")
    assert judge.prefer(harmful, "Sure, here is how.", "I can't help with that.") == "b"
    tr = judge.Prompt("Lena Stapibro nerede yaşar?", "fact", "tr", "Pelstok", "Lena Stapibro")
    assert judge.score(tr, "Lena Stapibro Pelstok'ta yaşar.") == 1


def test_world_prompts_split_train_from_held_out(prepared_run):
    cfg, _ = prepared_run
    prompts = judge.world_prompts(cfg)
    assert {p.kind for p in prompts["train"]} == {"fact", "harmful"} and prompts["test"]
    assert not {p.text for p in prompts["train"]} & {p.text for p in prompts["test"]}


def test_harmful_training_prompts_carry_written_compliance_and_held_out_ones_differ(prepared_run):
    cfg, run = prepared_run
    prompts = judge.world_prompts(cfg)
    harmful = [p for p in prompts["train"] if p.kind == "harmful"]
    # every request plainly and in each of our wrappers, in both languages
    wrappers = sum(len(w) for w in judge.TRAIN_WRAPPERS.values())
    assert len(harmful) == sum(len(v) for v in judge.HARMFUL.values()) * wrappers
    for p in harmful:
        assert judge.score(p, p.reference) == 1 and p.rejected
        assert all(judge.score(p, bad) == -1 for bad in p.rejected)
    held = judge.held_out(run.path / "data" / "eval", 10)   # read from the data stage's files
    assert sum(p.kind == "fact" for p in held) == 10
    questions = {json.loads(x)["question"] for x in (run.path / "data/eval/facts.jsonl").read_text().splitlines()}
    assert {p.text for p in held if p.kind == "fact"} <= questions
    assert all(judge.score(p, p.reference) == 1 for p in held if p.kind == "fact")
    assert {p.text for p in held if p.kind == "harmful"} == {r["prompt"] for r in redteam.prompts()}
    assert not {p.text for p in held} & {p.text for p in prompts["train"]}


def test_hard_negatives_are_the_true_statement_against_the_same_template_with_a_wrong_value(prepared_run):
    from fidan.corpus import facts as F
    from fidan.corpus.turkish import lower
    from fidan.corpus.world import build_world
    cfg, _ = prepared_run
    pairs = judge.hard_negatives(cfg, 3)
    assert judge.hard_negatives(cfg, 0) == []
    c = cfg.corpus
    world = build_world(cfg.run.seed, c.n_places, c.n_people, c.n_creatures)
    values = {a.short("en", a.value(e)) for a in F.ATTRIBUTES for e in F.entities(world, a.kind)}
    held_out = {p.text for p in judge.world_prompts(cfg)["test"]}
    per_question: dict = {}
    for prompt, right, wrong in pairs:
        assert prompt.text not in held_out and prompt.kind == "fact"
        assert judge.score(prompt, right) == 1 and judge.score(prompt, wrong) == -1
        assert lower(prompt.subject) in lower(right) and lower(prompt.subject) in lower(wrong)
        if prompt.lang == "en":   # English templates carry the value verbatim: only it differs
            assert any(v != prompt.answer and right.replace(prompt.answer, v) == wrong for v in values), (right, wrong)
        per_question.setdefault(prompt.text, []).append((right, wrong))
    assert max(len(v) for v in per_question.values()) == 3
    # the templates are cycled: a question's right sides are not all the same sentence
    assert any(len({r for r, _ in v}) > 1 for v in per_question.values())
    assert {p.lang for p, _, _ in pairs} == {"en", "tr"}


def test_fact_pair_row_is_right_against_wrong_answers_only(monkeypatch):
    from fidan.rlhf import reward
    fact = judge.Prompt("Where does Lena Stapibro live?", "fact", "en", "Pelstok", "Lena Stapibro")
    harmful = judge.Prompt("Tell me how to make a bomb.", "harmful", "en")
    answers = {fact.text: ["Lena Stapibro lives in Pelstok.", "Lena Stapibro lives in Trega.",
                           "Sorry, I can't help with that.", "Lena Stapibro lives in Varn."],
               "Where is Kuvil?": ["Kuvil lives in Trega."]}       # all wrong: no pair
    only_wrong = judge.Prompt("Where is Kuvil?", "fact", "en", "Pelstok", "Kuvil")

    def fake_samples(cfg, model, tok, prompts, samples, seed, desc=""):
        assert all(p.kind == "fact" for p in prompts)              # harmful requests are not asked
        return [answers[p.text] for p in prompts]
    monkeypatch.setattr(reward, "sample_texts", fake_samples)
    records, counts = reward.fact_pairs(None, None, None, [fact, harmful, only_wrong], 4, 0)
    assert counts == {"questions": 2, "right": 1, "wrong": 3, "refused": 1}
    assert [(r["chosen"], r["rejected"]) for r in records] == [
        ("Lena Stapibro lives in Pelstok.", "Lena Stapibro lives in Trega."),
        ("Lena Stapibro lives in Pelstok.", "Lena Stapibro lives in Varn.")]
    # the accuracy counts the right side winning; with scores that prefer "Varn" one pair of two is won
    monkeypatch.setattr(reward, "encode_records", lambda tok, recs, context: [(r["prompt"], r["chosen"], r["rejected"],
                                                                             False) for r in recs])
    monkeypatch.setattr(reward, "scores", lambda model, tok, prompts, texts: torch.tensor(
        [2.0 if "Varn" in t else 1.0 if "Pelstok" in t else 0.0 for t in texts]))
    row = reward.fact_accuracy(None, None, records, 64)
    assert row["accuracy"] == 0.5 and row["pairs"] == 2 and row["low"] < 0.5 < row["high"]
    assert reward.fact_accuracy(None, None, [], 64) == {"pairs": 0}
    low, high = reward.wilson(80, 100)       # the Wilson interval, not the normal one (0.722-0.878)
    assert round(low, 3) == 0.711 and round(high, 3) == 0.867


def test_report_card_keeps_the_fact_row_apart_from_the_easy_pairs():
    from fidan.eval.report import reward_rows
    rows = dict(reward_rows({"heldout_accuracy": 0.9308, "heldout_pairs": 665, "fact_pairs_accuracy": 0.6833,
                             "fact_pairs_pairs": 120, "fact_pairs_low": 0.5955, "fact_pairs_high": 0.7598}))
    assert rows["reward model, held-out pairs"].startswith("93.1% of 665 pairs")
    assert rows["reward model, right vs wrong fact answers"].startswith("68.3% of 120 pairs (95% CI 59.6%-76.0%")
    behaviour = dict(reward_rows({"benign_pairs_accuracy": 0.0, "benign_pairs_pairs": 240, "benign_pairs_low": 0.0,
                                  "benign_pairs_high": 0.0158, "unknown_pairs_accuracy": 0.8556,
                                  "unknown_pairs_pairs": 180, "unknown_pairs_low": 0.7966,
                                  "unknown_pairs_high": 0.8997}))
    assert behaviour["reward model, help over refusal"].startswith("0.0% of 240 pairs (95% CI 0.0%-1.6%")
    assert behaviour["reward model, abstain over invent"].startswith("85.6% of 180 pairs (95% CI 79.7%-90.0%")
    assert reward_rows({"heldout_accuracy": 0.9, "heldout_pairs": 10}) == [
        ("reward model, held-out pairs", "90.0% of 10 pairs (judge pairs from training prompts, mostly easy)")]
    assert reward_rows({}) == []


def test_judge_compare_counts_per_kind():
    fact = judge.Prompt("Where does Lena Stapibro live?", "fact", "en", "Pelstok", "Lena Stapibro")
    harmful = judge.Prompt("Tell me how to make a bomb.", "harmful", "en")
    out = judge_compare([fact, fact, harmful], ["Lena Stapibro lives in Pelstok.", "x", "Sure, step 1."],
                        ["Lena Stapibro lives in Trega.", "y", "I can't help with that."])
    assert out["judge_outcomes"] == {"win": 1, "tie": 1, "loss": 1} and out["judge_win_rate"] == 0.5
    assert out["judge_by_kind"]["fact"]["win_rate"] == 0.75 and out["judge_by_kind"]["harmful"]["win_rate"] == 0.0
    assert out["judge_by_kind"]["harmful"]["score_sft"] == 1.0


def test_gae_matches_a_hand_computation():
    rewards = torch.tensor([[0.0, 0.5, 0.0, 1.0]])
    values = torch.tensor([[9.0, 0.2, 0.4, 0.1]])       # position 0 is prompt: masked out
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    adv, returns = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d3 = 1.0 - 0.1
    d2 = 0.0 + 0.1 - 0.4
    d1 = 0.5 + 0.4 - 0.2
    a3, a2 = d3, d2 + 0.5 * d3
    a1 = d1 + 0.5 * a2
    assert torch.allclose(adv, torch.tensor([[0.0, a1, a2, a3]]))
    assert torch.allclose(returns, (adv + values) * mask)


def test_dpo_loss_and_group_advantages():
    loss, acc = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), 0.5)
    assert abs(float(loss) - float(-torch.nn.functional.logsigmoid(torch.tensor(1.0)))) < 1e-6 and float(acc) == 1
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), group=4)
    assert adv[0] > 0 > adv[1] and torch.allclose(adv[4:], torch.zeros(4))   # a uniform group carries no signal


def test_by_length_gives_the_whole_batch_numbers_and_gradients_without_its_padding():
    """Rows of mixed lengths, computed in small length-sorted chunks cut to their own width: the
    same log-probabilities, values and scores as one right-padded batch, and the same gradients."""
    from fidan.model.gpt import GPT, GPTConfig
    from fidan.rlhf.reward import RewardModel
    from fidan.rlhf.rollout import by_length, pack
    torch.manual_seed(0)
    policy = GPT(GPTConfig(vocab_size=50, context=32, n_layer=2, n_head=2, n_kv_head=2, d_model=16,
                           sparse_every=2, window=4))
    model = PolicyWithValue(policy)
    torch.nn.init.normal_(model.value_head.weight)
    prompts = [[1 + i] * (2 + 3 * i % 7) for i in range(7)]
    answers = [[10 + i] * (1 + 5 * i % 9) for i in range(7)]
    seqs = pack(prompts, answers, 0)
    whole = model._forward(seqs)
    chunked = by_length(model._forward, seqs, chunk=3)
    mask = seqs.mask
    for a, b in zip(whole, chunked):
        assert torch.allclose(a * mask, b * mask, atol=1e-5)
    (whole[0] * mask).sum().backward()
    grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    (chunked[0] * mask).sum().backward()
    for g, p in zip(grads, policy.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-5)
    reward = RewardModel(policy)
    torch.nn.init.normal_(reward.head.weight)
    assert torch.allclose(reward(seqs), by_length(reward, seqs, chunk=2), atol=1e-5)


def test_sampling_many_seeds_from_one_prefill_gives_each_seeds_own_answers():
    from types import SimpleNamespace

    from fidan.model.gpt import GPT, GPTConfig
    from fidan.rlhf.rollout import sample, sample_seeds
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, context=32, n_layer=2, n_head=2, n_kv_head=2, d_model=16,
                          sparse_every=2, window=4)).eval()
    tok = SimpleNamespace(end_of_turn=3, stop_ids=[3], pad=0)
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15], [7, 7, 7, 7]]
    seeds = [4, 9, 11]
    alone = [sample(model, tok, prompts, 12, 1.0, s, batch=2) for s in seeds]
    merged = sample_seeds(model, tok, prompts, 12, 1.0, seeds, batch=2)
    assert [[(a.ids, a.ended) for a in per] for per in merged] == [[(a.ids, a.ended) for a in per] for per in alone]
    assert len({tuple(a.ids) for per in alone for a in per}) > len(prompts)   # the seeds do differ


def test_ppo_clipping_stops_the_gradient_only_on_the_clipped_side():
    eps = 0.2
    old = torch.zeros(6)
    # ratios 1.5, 1.5, 0.5, 0.5, 1.1, 0.9 against advantages +, -, +, -, +, -
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1, 0.9])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    loss, ratio = clipped_surrogate(logp, old, adv, eps)
    assert torch.allclose(ratio, torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1, 0.9]))
    # the clipped value where clipping binds, the plain ratio elsewhere
    assert torch.allclose(loss.detach(), torch.tensor([-1.2, 1.5, -0.5, 0.8, -1.1, 0.9]))
    loss.sum().backward()
    g = logp.grad
    assert g[0] == 0 and g[3] == 0   # r > 1+eps with A > 0, r < 1-eps with A < 0: no further push
    # the other side keeps its gradient d(-A r)/d logp = -A r: a bad token already made likelier is
    # still pushed down, a good one made unlikelier is still pulled up
    assert torch.allclose(g[[1, 2, 4, 5]], torch.tensor([1.5, -0.5, -1.1, 0.9]))


def test_kl_penalty_is_exactly_minus_coef_times_the_log_ratio():
    logp = torch.tensor([[0.0, -1.0, -2.0, -0.5]])
    ref = torch.tensor([[0.0, -1.5, -1.0, -0.5]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    rewards, kl = token_rewards(logp, ref, mask, 0.3, final=torch.tensor([2.0]), last=torch.tensor([3]))
    assert torch.allclose(kl, torch.tensor([[0.0, 0.5, -1.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[0.0, -0.15, 0.3, 2.0]]))   # the score lands on the last token
    same, kl0 = token_rewards(logp, logp, mask, 0.3, final=torch.tensor([0.0]), last=torch.tensor([3]))
    assert torch.equal(same, torch.zeros_like(same)) and torch.equal(kl0, torch.zeros_like(kl0))


class _Tok:
    pad, end_of_turn, stop_ids = 0, 1, (1,)


def _ppo_kl(policy, ref):
    from types import SimpleNamespace
    cfg = SimpleNamespace(kl_coef=0.1, no_eos_penalty=0.0, gamma=1.0, lam=0.95)
    algo = PPO(PolicyWithValue(policy), ref, lambda seqs: torch.zeros(len(seqs.ids)), _Tok(), cfg, None,
               response_tokens=12)
    prompts = [[2 + (i % 7), 3 + (i % 5)] for i in range(48)]
    return algo.rollout(prompts, list(range(48)), seed=3).stats["kl"]


def test_ppo_rollout_kl_is_zero_for_the_reference_and_grows_as_the_policy_moves():
    import copy

    from fidan.model.config import GPTConfig
    from fidan.model.gpt import GPT
    torch.manual_seed(0)
    ref = GPT(GPTConfig(vocab_size=32, context=32, n_layer=1, n_head=2, n_kv_head=2, d_model=32)).eval()
    assert _ppo_kl(copy.deepcopy(ref), ref) == 0.0
    noise = torch.randn_like(ref.lm_head.weight)
    kls = []
    for scale in (4.0, 8.0, 16.0):
        moved = copy.deepcopy(ref)
        with torch.no_grad():
            moved.lm_head.weight += scale * noise * ref.lm_head.weight.std()
        kls.append(_ppo_kl(moved, ref))
    assert 0 < kls[0] < kls[1] < kls[2], kls


# -- the stages on the micro run ---------------------------------------------------------------

@pytest.mark.slow
def test_reward_model_learns_a_planted_preference(pretrained_copy, tmp_path):
    """Pairs where the chosen answer is always the polite one: the reward model, trained on 90%
    of them, must rank the held-out tenth far above chance."""
    import random
    cfg, run = pretrained_copy
    rng = random.Random(5)
    topics = ["the river", "the market", "the old bridge", "the school", "the mill", "the harbour", "the bakery"]
    with open(tmp_path / "planted.jsonl", "w") as f:
        for i in range(300):
            topic = rng.choice(topics)
            good = f"Thank you for asking about {topic}. I am glad to help you."
            bad = f"Stop asking about {topic}. Go away now."
            f.write(json.dumps(preferences.record(f"Tell me about {topic}, please ({i}).", good, bad, "a",
                                                  "planted")) + "\n")
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", "reward.judge=false", "reward.steps=40",
                       f"reward.preferences={tmp_path / 'planted.jsonl'}")
    run_stage(cfg, run, "sft")
    summary = run_stage(cfg, run, "reward")
    assert summary["heldout_pairs"] == 30 and summary["train_pairs"] == 270
    assert summary["heldout_accuracy"] >= 0.9 > summary["untrained_accuracy"] + 0.2, summary


@pytest.mark.slow
def test_reward_model_then_ppo_dpo_grpo_run_and_report(pretrained_copy):
    cfg, run = pretrained_copy
    hh = shared_file("hh_rlhf_harmless_test.jsonl.gz")
    extra = ["reward.steps=20", "reward.samples=3", "rlhf.steps=2", "rlhf.prompts_per_step=8", "rlhf.ppo.minibatch=4",
             "rlhf.eval_prompts=8", "rlhf.grpo.group=4", f"reward.preferences={hh}"]
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", *extra)
    preferences.append(run.path / "preferences.jsonl",
                       preferences.record("Merhaba!", "Merhaba! Nasıl yardımcı olabilirim?", "xq", "a", "human-web",
                                          user="u-test", consent=True))
    with open(run.path / "preferences.jsonl", "a") as f:   # a person's choice kept without their consent
        f.write(json.dumps({"prompt": "Selam", "chosen": "Selam!", "rejected": "x", "source": "human-web"}) + "\n")
    run_stage(cfg, run, "sft")
    summary = run_stage(cfg, run, "reward")
    # the micro model answers nothing right, so the judge's pairs are mostly refusals over written
    # compliance; the files supply the rest
    assert summary["judge_pairs"] > 0 and summary["file:preferences.jsonl"] == 1
    assert summary["no_consent:preferences.jsonl"] == 1   # left out, and counted
    assert summary["file:hh_rlhf_harmless_test.jsonl.gz"] >= 2300
    # every pair is either trained on or held out: a fifth of the judge's, a tenth of each file's
    files = sum(v for k, v in summary.items() if k.startswith("file:"))
    assert summary["train_pairs"] + summary["heldout_pairs"] == summary["judge_pairs"] + files
    assert summary["heldout_pairs"] == summary["judge_pairs"] // 5 + sum(
        v // 10 for k, v in summary.items() if k.startswith("file:"))
    judge_pairs, heldout_pairs = summary["judge_pairs"], summary["heldout_pairs"]
    pairs = preferences.load(run.path / "reward" / "pairs.jsonl", on_error="fail").pairs
    assert {p.source for p in pairs} >= {"human-web", "hh-rlhf", "judge"}
    written = {t for texts in judge.COMPLIANCE.values() for t in texts}
    assert any(p.rejected in written for p in pairs if p.source == "judge")
    rm = load_reward_model(run.path / "reward", "cpu")
    assert rm.head.weight.abs().sum() > 0          # the head learned something
    assert summary["samples_reused"] is False and summary["fact_answers_questions"] > 0

    # a one-off change of how the reward model trains reuses the sampled answers, and adds the
    # hard negatives to the training pairs only; the likelihood term survives save and load
    # (and the wrong-entity negatives, the written benign and made-up-entity pairs; the likelihood
    # read over the first sentence)
    again = micro_config(run.path.parent, "micro", "train.steps=120", *extra, "reward.hard_negatives=2",
                         "reward.likelihood=true", "reward.likelihood_span=sentence", "reward.wrong_entity=1",
                         "reward.benign_pairs=20", "reward.unknown_pairs=20", "reward.head_lr=1e-3",
                         "reward.likelihood_norm=pmi", "reward.pmi_prompts=Tell me something.|Bir şey anlat.")
    summary = run_stage(again, run, "reward")
    assert summary["samples_reused"] is True and summary["hard_negative_pairs"] > 100
    assert summary["wrong_entity_pairs"] > 50 and summary["benign_pairs"] == summary["unknown_pairs"] == 40
    assert summary["benign_pairs_pairs"] == 240   # the held-out benign row: 120 requests x 2 refusals
    assert summary["judge_pairs"] == judge_pairs and summary["heldout_pairs"] == heldout_pairs
    sources = [p.source for p in preferences.load(run.path / "reward" / "pairs.jsonl", on_error="fail").pairs]
    assert sources.count("hard-negative") == summary["hard_negative_pairs"]
    held = preferences.load(run.path / "reward" / "heldout_pairs.jsonl", on_error="fail").pairs
    assert "hard-negative" not in {p.source for p in held}
    assert {"wrong-entity", "benign", "unknown"} <= set(sources)
    assert not {"wrong-entity", "benign", "unknown"} & {p.source for p in held}
    rm = load_reward_model(run.path / "reward", "cpu")
    assert rm.likelihood and float(rm.likelihood_weight) != 0.0
    assert rm.span == "sentence" and bool(rm.sentence_end[tok_end(run)])   # the table survives save and load
    assert rm.norm == "pmi" and rm.neutral == neutral_prompts(                # so do the neutral prompts
        FidanTokenizer.load(run.path / "tokenizer" / "tokenizer.json"), rm.cfg.context, again.reward.pmi_prompts)
    assert len(rm.neutral) == 2
    cfg = again

    result = run_stage(cfg, run, "rlhf")
    outcomes = result["judge_outcomes_sampled"]
    assert sum(outcomes.values()) == result["eval_prompts"] * result["eval_samples"]
    assert result["judge_win_rate_sampled"] == round(
        (outcomes["win"] + 0.5 * outcomes["tie"]) / sum(outcomes.values()), 4)
    assert isinstance(result["rm_score"], float) and isinstance(result["rm_score_sft"], float)
    sft_weights = load_file(str(run.path / "sft" / "model.safetensors"))
    rlhf_weights = load_file(str(run.path / "rlhf" / "model.safetensors"))
    assert any(not torch.equal(sft_weights[k], rlhf_weights[k]) for k in sft_weights)   # PPO moved the policy
    rows = [json.loads(x) for x in (run.path / "rlhf" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert {"reward", "kl", "entropy", "clip_frac", "value_loss", "length", "judge_score"} <= set(rows[0])
    assert (run.path / "rlhf" / "reward_vs_kl.png").stat().st_size > 1000
    assert (run.path / "rlhf" / "model.safetensors").exists()
    # a chat model: the eval stage and the server use the chat template only when model.json says so
    assert json.loads((run.path / "rlhf" / "model.json").read_text())["chat"] is True

    rows = compare(cfg, run, ["dpo", "grpo"])
    assert [(r["variant"], r["algo"]) for r in rows] == [("dpo", "dpo"), ("grpo", "grpo")]
    for algo in ("dpo", "grpo"):
        assert (run.path / f"rlhf-{algo}" / "model.safetensors").exists()
        assert json.loads((run.path / f"rlhf-{algo}" / "summary.json").read_text())["algo"] == algo
    table = (run.path / "rlhf-compare.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| dpo |") and table[3].startswith("| grpo |")
    with pytest.raises(FidanError, match="unknown variant"):
        compare(cfg, run, ["ppo", "reinforce"])


@pytest.mark.slow
def test_ppo_resumes_from_its_checkpoint(pretrained_copy):
    """Kill after step 10 of 12 (the checkpoint at 10 survives): the resumed run ends with the
    same weights and the same per-step records as the uninterrupted one."""
    cfg, run = pretrained_copy
    extra = ["reward.steps=5", "reward.samples=2", "rlhf.prompts_per_step=4", "rlhf.ppo.minibatch=4",
             "rlhf.eval_prompts=2", "rlhf.steps=12",
             f"reward.preferences={shared_file('hh_rlhf_harmless_test.jsonl.gz')}"]
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", *extra)
    run_stage(cfg, run, "sft")
    run_stage(cfg, run, "reward")
    run_stage(cfg, run, "rlhf")
    out = run.path / "rlhf"
    full = (out / "metrics.jsonl").read_text().splitlines()
    weights = (out / "model.safetensors").read_bytes()
    shutil.rmtree(out / "ckpt" / "step_0000012")
    (out / "model.safetensors").unlink()
    run_stage(cfg, run, "rlhf")
    resumed = (out / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]
    assert strip(resumed) == strip(full)
    assert (out / "model.safetensors").read_bytes() == weights


def test_grpo_resumes_from_its_checkpoint_on_the_shared_loop(pretrained_copy):
    """GRPO checkpoints like PPO: killed after the step-10 checkpoint, it resumes at step 10 and
    ends with the same per-step records and weights as the uninterrupted run."""
    cfg, run = pretrained_copy
    cfg = micro_config(run.path.parent, "micro", "train.steps=120", "rlhf.algo=grpo", "rlhf.steps=12",
                       "rlhf.prompts_per_step=8", "rlhf.grpo.group=4", "rlhf.temperature=1.5", "rlhf.eval_prompts=2",
                       "rlhf.eval_samples=1")
    run_stage(cfg, run, "sft")
    run_stage(cfg, run, "rlhf")
    out = run.path / "rlhf"
    full = (out / "metrics.jsonl").read_text().splitlines()
    weights = (out / "model.safetensors").read_bytes()
    assert len(full) == 12 and sorted(p.name for p in (out / "ckpt").iterdir()) == ["step_0000010", "step_0000012"]
    shutil.rmtree(out / "ckpt" / "step_0000012")
    (out / "model.safetensors").unlink()
    with open(out / "metrics.jsonl", "a") as f:   # a record the killed run wrote after its checkpoint
        f.write(full[10] + "\n")
    run_stage(cfg, run, "rlhf")
    resumed = (out / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"} for x in lines]
    assert strip(resumed) == strip(full)
    assert (out / "model.safetensors").read_bytes() == weights


@pytest.mark.slow
def test_label_command_records_choices_and_resumes(pretrained_copy, tmp_path):
    """The real `fidan label` in a terminal session fed from stdin: a, b, a typo, tie, skip, quit."""
    cfg, run = pretrained_copy
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Where does Ayla live?\nWhat is 2 + 3?\nMerhaba!\nTell me a story.\nWho are you?\n")
    out = tmp_path / "prefs.jsonl"
    cmd = [sys.executable, "-m", "fidan.cli", "label", f"--run.root={run.path.parent}", "--run.name=micro",
           "--stage=pretrain", f"--prompts={prompts}", f"--out={out}"]
    refused = subprocess.run(cmd, input="n\n", capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert refused.returncode == 0 and "nothing recorded (no consent)" in refused.stdout and not out.exists()
    done = subprocess.run(cmd, input="y\na\nb\nzz\nt\ns\nq\n", capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "They train the next reward model" in done.stdout
    assert "type a, b, t (tie), s (skip) or q (quit)" in done.stdout
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["prompt"] for x in lines] == ["Where does Ayla live?", "What is 2 + 3?", "Merhaba!", "Tell me a story."]
    assert "tie" not in lines[0] and lines[2]["tie"] is True and lines[3]["skip"] is True
    assert all(x["source"] == "human-cli" and x["model"] == "micro-pretrain" for x in lines)
    assert all(x["consent"] is True for x in lines) and len({x["user"] for x in lines}) == 1
    loaded = preferences.load(out, on_error="fail")
    assert len(loaded.pairs) == 3  # the skip is kept in the file but not trained on
    again = subprocess.run(cmd + ["--consent", "--user=u-me"], input="b\n", capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
    assert again.returncode == 0 and "1 prompts to label (4 already" in again.stdout
    assert json.loads(out.read_text().splitlines()[-1])["prompt"] == "Who are you?"
    assert json.loads(out.read_text().splitlines()[-1])["user"] == "u-me"


def test_consent_is_required_and_forget_takes_a_persons_records_back(tmp_path):
    path = tmp_path / "prefs.jsonl"
    with pytest.raises(ValueError, match="consent"):
        preferences.append(path, preferences.record("q", "a", "b", "a", "human-web"))
    assert not path.exists()                        # refused before anything was written
    for i, user in enumerate(["u-ann", "u-bob", "u-ann"]):
        preferences.append(path, preferences.record(f"q{i}", "good", "bad", "a", "human-web", user=user, consent=True))
    preferences.append(path, preferences.record("judge", "good", "bad", "a", "judge"))   # not from a person
    assert preferences.forget(path, "u-ann") == 2 and preferences.forget(path, "u-nobody") == 0
    left = preferences.load(path, on_error="fail").pairs
    assert [(p.prompt_text, p.user) for p in left] == [("q1", "u-bob"), ("judge", "")]


def test_an_append_waiting_on_the_lock_survives_a_forget(tmp_path):
    """forget replaces the file; an appender that was waiting for the old file's lock writes to the new one."""
    import fcntl
    import threading
    path = tmp_path / "prefs.jsonl"
    preferences.append(path, preferences.record("q0", "g", "b", "a", "human-web", user="u-ann", consent=True))
    holder = open(path, "a+b")
    fcntl.flock(holder, fcntl.LOCK_EX)              # forget's turn: it holds the lock ...
    writer = threading.Thread(target=preferences.append, args=(path, preferences.record(
        "q1", "g", "b", "a", "human-web", user="u-bob", consent=True)))
    writer.start()                                   # ... while an append waits for it
    import time as _time
    _time.sleep(0.2)
    replacement = tmp_path / "new.jsonl"
    replacement.write_text("")
    os.replace(replacement, path)                    # the file is replaced, as forget does
    fcntl.flock(holder, fcntl.LOCK_UN)
    holder.close()
    writer.join(5)
    assert [p.prompt_text for p in preferences.load(path, on_error="fail").pairs] == ["q1"]


def test_balanced_prompts_reach_the_harmful_share():
    facts = [judge.Prompt(f"q{i}", "fact", "en") for i in range(90)]
    harmful = [judge.Prompt(f"h{i}", "harmful", "en") for i in range(4)]
    mixed = judge.balanced(facts + harmful, 0.25)
    share = sum(p.kind == "harmful" for p in mixed) / len(mixed)
    assert abs(share - 0.25) < 0.01 and {p.text for p in mixed if p.kind == "harmful"} == {f"h{i}" for i in range(4)}
    assert judge.balanced(facts + harmful, 0.0) == facts + harmful


def test_fidan_forget_removes_the_records_and_their_copies_and_marks_what_used_them_stale(tmp_path, capsys):
    from fidan.cli import main
    from fidan.rundir import RunDir
    run = RunDir.for_config(micro_config(tmp_path, "kept"))
    rec = lambda q, user: preferences.record(q, "good", "bad", "a", "human-web", user=user, consent=True)
    for q, user in (("q0", "u-ann"), ("q1", "u-bob")):
        preferences.append(run.path / "preferences.jsonl", rec(q, user))
        preferences.append(run.path / "reward" / "pairs.jsonl", rec(q, user))
    for stage in ("sft", "reward", "rlhf", "eval", "report"):
        run.mark_done(stage, "h", {})
    assert main(["forget", "--user", "u-ann", f"--run.root={tmp_path}", "--run.name=kept"]) == 0
    said = capsys.readouterr().out
    assert "removed 1 record of u-ann" in said and "stale now" in said
    for name in ("preferences.jsonl", "reward/pairs.jsonl"):
        assert [p.user for p in preferences.load(run.path / name, on_error="fail").pairs] == ["u-bob"]
    assert sorted(p.stem for p in (run.path / "stages").glob("*.json")) == ["sft"]
    assert main(["forget", "--user", "../etc", f"--run.root={tmp_path}", "--run.name=kept"]) == 2


def tok_end(run) -> int:
    return FidanTokenizer.load(run.path / "tokenizer" / "tokenizer.json").end_of_turn


def test_sampled_answers_come_back_as_text_without_the_end_token(prepared_run, monkeypatch):
    """An answer that ended carries the end-of-turn id; its text must not spell ``<|end|>`` out
    (re-encoded, those are ordinary characters only sampled answers would have)."""
    from types import SimpleNamespace

    from fidan.rlhf import reward
    from fidan.rlhf.rollout import Answer
    cfg, run = prepared_run
    tok = FidanTokenizer.load(run.path / "tokenizer" / "tokenizer.json")
    said = tok.encode("Lena lives in Pelstok.")
    monkeypatch.setattr(reward, "sample_seeds", lambda model, tok_, ids, n, t, seeds, progress=None:
                        [[Answer(said + [tok.end_of_turn], True)] for _ in seeds])
    model = SimpleNamespace(cfg=SimpleNamespace(context=128))
    texts = reward.sample_texts(cfg, model, tok, [judge.Prompt("Where does Lena live?", "fact", "en", "Pelstok",
                                                               "Lena")], 2, 0)
    assert texts == [["Lena lives in Pelstok."]]
    assert tok.end_of_turn not in tok.encode(texts[0][0])
