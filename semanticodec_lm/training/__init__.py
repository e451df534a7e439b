"""Training plumbing shared by the recipes: YAML configs with overrides, Lightning runs (atomic
checkpoints, loggers, summaries) and the codec's stage framework."""
