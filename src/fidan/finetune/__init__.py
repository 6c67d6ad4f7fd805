"""Fine-tuning: supervised instruction tuning and its family of methods."""
