"""Text-to-audio: a caption tokenizer and a text-conditioned LM, generation with guidance, caption adherence."""
