"""A Mamba language model on the package's backbone: pretrained weights, generation, training.

``from_pretrained`` reads a Hugging Face transformers folder (``state-spaces/mamba-130m-hf``),
``lm_forward``/``lm_backward`` are the model, ``generate`` decodes with the recurrent step mode.
"""
from .generate import generate, iter_generate, next_token_probs, sample_next
from .model import (
                    MambaLMConfig,
                    cross_entropy_backward,
                    cross_entropy_forward,
                    embedding_backward,
                    embedding_forward,
                    init_lm_params,
                    init_lm_state,
                    lm_backward,
                    lm_forward,
                    lm_step,
                    state_from_cache,
)
from .pretrained import from_pretrained, load_tokenizer

__all__ = ["MambaLMConfig", "cross_entropy_backward", "cross_entropy_forward", "embedding_backward",
           "embedding_forward", "from_pretrained", "generate", "init_lm_params", "init_lm_state", "iter_generate",
           "lm_backward", "lm_forward", "lm_step", "load_tokenizer", "next_token_probs", "sample_next",
           "state_from_cache"]
