"""The sequence models, one contract, one backbone.

    backbone.py           read_in -> n_layer blocks -> norm_f -> read_out; the block type
                          comes from the config (``cfg.block``, a backbone.Block)
    mamba.py              MambaConfig and the Mamba block  x + mixer(rmsnorm(x))
    mixer.py              the Mamba mixer's NumPy definition, read line by line
    mixer_fused.py        the same mixer composed from fused compiled kernels (the fast path)
    transformer.py        the pre-norm attention + MLP block both Transformers share
    linear_attention.py   LinearTFConfig: causal linear attention (Katharopoulos et al. 2020)
    softmax_attention.py  SoftmaxTFConfig: causal softmax attention (GPT-2 style)
    mixer_variants.py     the mixer with its selection or its gate removed, or its selection frozen
    mamba_ablations.py    MambaNonselectiveConfig, MambaNoGateConfig (issue 14's ablations) and
                          FrozenSelection(cfg), a Mamba evaluated with frozen selection

The contract, the same order at every level (layer, mixer, block, model):
    config            a dataclass with ``param_shapes()``, ``to_dict()`` and ``block``
    init_params(cfg, rng, dtype) -> params, a flat dict keyed by official names
    model_forward(params, cfg, x, backend) -> (out, cache)
    model_backward(dout, cache) -> (grads, dx)
    block: forward(x, p, cfg, state, backend, check) -> (out, state, cache),
           backward(dout, cache) -> (grads, dx)
    mixer: mixer_forward(x, p, state, backend, check) -> (out, state, cache),
           mixer_backward(dout, cache, dh_last) -> (grads, dx, dh0)
A backward returns the parameters' gradients first, then the input's, then (where the
forward takes one) the initial state's. A recurrent state is returned explicitly by the
forward, never left in a cache: the Mamba's is one {"conv": (b, k-1, d_inner), "h": (b,
d_inner, n)} per block; the Transformers' blocks have none (None).

Which model runs is the config's type: ``backbone.model_forward(params, cfg, x)`` stacks
``cfg.block``; a new sequence model is a new block and a config class, not a new stack.
The module-level ``model_forward`` of each model checks that the config is its own.
Tests: tests/test_models_*.py, tests/test_mixer.py.
"""
from .linear_attention import LinearTFConfig
from .mamba import MambaConfig
from .mamba_ablations import MambaNoGateConfig, MambaNonselectiveConfig
from .softmax_attention import SoftmaxTFConfig

# every model config, for checkpoint.py
CONFIGS = (MambaConfig, MambaNonselectiveConfig, MambaNoGateConfig, LinearTFConfig, SoftmaxTFConfig)
