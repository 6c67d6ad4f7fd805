"""The shared training loop and what it needs: schedules, checkpoints, throughput."""
