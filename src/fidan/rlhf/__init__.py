"""RLHF: preference pairs, a reward model, and PPO / DPO / GRPO."""
