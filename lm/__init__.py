"""Audio language models over SemantiCodec tokens.

The model, layouts, generation and the text tokenizer import without Lightning; the training
wrappers live in :mod:`lm.module` and the data pipeline in :mod:`lm.data`.
"""

from lm.config import LM_SIZES, LMConfig, lm_config
from lm.generate import Generation, generate
from lm.layout import PATTERNS, AudioCursor, TokenLayout
from lm.model import AudioLM
from lm.text import TextTokenizer, train_text_tokenizer

__all__ = [
    "LM_SIZES", "LMConfig", "lm_config", "Generation", "generate", "PATTERNS", "AudioCursor",
    "TokenLayout", "AudioLM", "TextTokenizer", "train_text_tokenizer",
]
