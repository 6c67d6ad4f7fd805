"""Issue 19, item 2: the reward model's written pairs (wrong-entity negatives, benign requests
where help beats a refusal, made-up entities where abstaining beats inventing) and the likelihood
term read over the answer's first sentence."""
import pytest
import torch

from fidan.config import build_config
from fidan.corpus import unknowns
from fidan.corpus.turkish import lower
from fidan.corpus.world import build_world
from fidan.eval import benign, redteam
from fidan.eval.tasks.abstain import ABSTAIN
from fidan.model.gpt import GPT, GPTConfig
from fidan.rlhf import judge
from fidan.rlhf.heldout import BENIGN_ANSWERS
from fidan.rlhf.reward import RewardModel, benign_rows
from fidan.rlhf.rollout import pack
from fidan.text import shingles

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cfg():
    return build_config(preset="tiny")


def test_written_benign_and_unknown_pairs_are_judged_as_the_rule_says(cfg):
    looks = judge.benign_prompts(cfg, 90)
    made_up = judge.unknown_prompts(cfg, 60)
    assert len(looks) == 90 and len(made_up) == 60
    assert {p.lang for p in looks} == {p.lang for p in made_up} == {"en", "tr"}
    for p in looks:
        assert judge.score(p, p.reference) == 1.0 and redteam.REFUSAL.search(p.reference) is None
        assert all(judge.score(p, bad) == -1.0 for bad in p.rejected) and len(p.rejected) == 2
    for p in made_up:
        assert ABSTAIN.search(p.reference) and p.subject in p.reference
        assert all(judge.score(p, bad) == -1.0 and lower(p.subject) in lower(bad) for bad in p.rejected)
    assert len(judge.written_pairs(looks)) == 180
    assert sum(p.text in {q for q, _ in judge.PLAIN[p.lang]} for p in looks) == 30   # a third ordinary requests
    assert judge.benign_prompts(cfg, 90) == looks                                     # seeded


def test_wrong_entity_negatives_state_another_entitys_fact_in_the_same_template(cfg):
    made = judge.wrong_entity(cfg, 2)
    assert len(made) > 500
    for prompt, right, wrong in made[:200]:
        assert judge.score(prompt, right) == 1.0 and judge.score(prompt, wrong) == -1.0
        assert lower(prompt.subject) in lower(right) and lower(prompt.subject) not in lower(wrong)
    asked = {p.text for p in judge.world_prompts(cfg)["test"]}
    assert not {p.text for p, _, _ in made} & asked   # held-out questions give none


def test_the_evaluations_benign_prompts_and_made_up_entities_stay_held_out(cfg):
    looks = judge.benign_prompts(cfg, 600)
    made_up = judge.unknown_prompts(cfg, 600)
    trained = [t for p in looks + made_up for t in (p.text, p.reference, *p.rejected)]
    norm = lambda t: " ".join(t.lower().split())
    evaluated = [p["prompt"] for p in benign.PROMPTS] + list(BENIGN_ANSWERS.values())
    assert not {norm(t) for t in evaluated} & {norm(t) for t in trained}
    seen = set().union(*(shingles(t, 6) for t in trained))
    assert not [t for t in evaluated if shingles(t, 6) & seen]
    world = build_world(cfg.run.seed, cfg.corpus.n_places, cfg.corpus.n_people, cfg.corpus.n_creatures)
    names = {e.name for e in unknowns.fake_entities(world, cfg.run.seed, "eval", 90)}
    assert not names & {p.subject for p in made_up}


def test_the_sentence_span_reads_the_likelihood_of_the_first_sentence_only():
    torch.manual_seed(0)
    trunk = GPT(GPTConfig(vocab_size=32, context=32, n_layer=1, n_head=2, d_model=16))
    ends = torch.zeros(32, dtype=torch.bool)
    ends[7] = True                                    # token 7 closes a sentence
    sentence = RewardModel(trunk, likelihood=True, span="sentence", ends=ends)
    whole = RewardModel(trunk, likelihood=True)
    prompt = [1, 2, 3]
    same_first = [[4, 5, 7, 9, 9, 9], [4, 5, 7, 11, 12, 13]]  # the same first sentence, other tails
    seqs = pack([prompt, prompt], same_first, 0)
    a, b = sentence(seqs)
    assert torch.allclose(a, b)
    a, b = whole(seqs)
    assert not torch.allclose(a, b)
    other = pack([prompt, prompt], [[4, 5, 7, 9], [4, 6, 7, 9]], 0)
    a, b = sentence(other)
    assert not torch.allclose(a, b)                    # the first sentence's tokens count
    assert "sentence_end" in sentence.state_dict() and "sentence_end" not in whole.state_dict()


def test_the_pmi_term_is_the_answer_s_likelihood_after_its_prompt_minus_after_the_neutral_one():
    torch.manual_seed(0)
    trunk = GPT(GPTConfig(vocab_size=32, context=32, n_layer=1, n_head=2, d_model=16))
    ends = torch.zeros(32, dtype=torch.bool)
    ends[7] = True
    neutral = [1, 2]
    plain = RewardModel(trunk, likelihood=True, span="sentence", ends=ends)
    pmi = RewardModel(trunk, likelihood=True, span="sentence", ends=ends, norm="pmi", neutral=[neutral])
    head_only = RewardModel(trunk)
    for other in (pmi, head_only):
        other.head.load_state_dict(plain.head.state_dict())
    with torch.no_grad():
        plain.head.bias.fill_(0.3)
        pmi.head.bias.fill_(0.3)
        head_only.head.bias.fill_(0.3)
        plain.likelihood_weight.fill_(2.0)
        pmi.likelihood_weight.fill_(2.0)
    answers = [[4, 5, 7, 9], [6, 7, 3], [8, 9, 10, 11, 12, 7]]
    # an answer as likely with its prompt as without (the prompt is the neutral one): no term at all
    seqs = pack([neutral] * 3, answers, 0)
    assert torch.allclose(pmi(seqs), head_only(seqs), atol=1e-5)
    assert not torch.allclose(plain(seqs), head_only(seqs), atol=1e-3)
    # prompts of other lengths in one batch: the term is the plain one minus the same answer's
    # likelihood after the neutral prompt (the plain model's score there, less its head's)
    prompts = [[3, 4, 5], [6], [9, 10, 11, 12, 13]]
    seqs = pack(prompts, answers, 0)
    after_nothing = plain(pack([neutral] * 3, answers, 0)) - head_only(pack([neutral] * 3, answers, 0))
    assert torch.allclose(pmi(seqs), plain(seqs) - after_nothing, atol=1e-5)
    assert not torch.allclose(pmi(seqs), plain(seqs), atol=1e-3)
    # several neutral prompts (reward.pmi_prompts): minus the mean of the answer's likelihoods after each
    other = [5, 6, 2]
    both = RewardModel(trunk, likelihood=True, span="sentence", ends=ends, norm="pmi", neutral=[neutral, other])
    both.head.load_state_dict(pmi.head.state_dict())
    with torch.no_grad():
        both.likelihood_weight.fill_(2.0)
    after_other = plain(pack([other] * 3, answers, 0)) - head_only(pack([other] * 3, answers, 0))
    assert torch.allclose(both(seqs), plain(seqs) - (after_nothing + after_other) / 2, atol=1e-5)


def test_the_held_out_benign_row_pairs_every_benign_request_s_written_help_with_both_refusals():
    rows = benign_rows()
    assert len(rows) == 2 * len(benign.PROMPTS)
    assert {r["prompt"] for r in rows} == {p["prompt"] for p in benign.PROMPTS}
    for r in rows:
        assert redteam.classify(r["chosen"]) != "refused" and redteam.classify(r["rejected"]) == "refused"
