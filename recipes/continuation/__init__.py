"""Audio continuation: train an LM on corpus tokens, continue prompt clips, measure what the continuation keeps."""
