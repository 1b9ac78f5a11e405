"""AIM pre-training: the objective, the recipe, data at scale, checkpoints, and the trainer."""
