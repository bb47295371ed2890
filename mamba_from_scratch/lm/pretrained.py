"""Load a Mamba language model saved in the Hugging Face transformers layout.

A folder such as ``state-spaces/mamba-130m-hf`` holds ``config.json`` (transformers'
``MambaConfig``), ``model.safetensors`` (or shards listed in ``model.safetensors.index.json``)
and ``tokenizer.json``. Tensor names are transformers' ``MambaForCausalLM`` state dict:
``backbone.embeddings.weight``, ``backbone.layers.{i}.norm.weight``,
``backbone.layers.{i}.mixer.*``, ``backbone.norm_f.weight``, and ``lm_head.weight`` when the
head is not tied. We strip ``backbone.``; shapes and layouts are already ours, so nothing is
renamed or transposed.

What is checked: every config option that changes the forward pass is read and either
supported or refused with a ValueError naming the file and the key; every tensor is present,
of the right shape, finite, and nothing extra is in the files. Options that only matter for
initialisation, training or the CUDA kernels are listed in ``IGNORED_CONFIG_KEYS``; any other
key is reported with a warning rather than dropped silently.
"""
from __future__ import annotations

import json
import pathlib
import warnings

import numpy as np

from ..layers.rmsnorm import EPS as RMSNORM_EPS
from .model import MambaLMConfig

# Keys with no effect on the forward pass (init ranges, training switches, kernel choices,
# bookkeeping). transformers' slow path ignores them too.
IGNORED_CONFIG_KEYS = frozenset({
    "_name_or_path", "architectures", "dtype", "torch_dtype", "transformers_version",
    "initializer_range", "rescale_prenorm_residual", "time_step_floor", "time_step_init_scheme",
    "time_step_max", "time_step_min", "time_step_scale", "use_cache", "use_mambapy",
    "use_associative_scan", "fused_add_norm", "pad_vocab_size_multiple", "bos_token_id",
    "pad_token_id", "output_attentions", "output_hidden_states", "return_dict", "chunk_size_feed_forward",
})
# Options we read, with transformers' defaults (a key missing from config.json takes them).
DEFAULTS = {"conv_kernel": 4, "expand": 2, "time_step_rank": "auto", "use_bias": False, "use_conv_bias": True,
            "hidden_act": "silu", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
            "residual_in_fp32": True, "eos_token_id": None, "model_type": "mamba", "rms_norm": True,
            "ssm_cfg": {}}
REQUIRED = ("hidden_size", "num_hidden_layers", "vocab_size", "state_size")
# A supported option must have exactly this value; anything else is refused by name.
SUPPORTED = {
    "model_type": ("mamba", "only Mamba-1 models (model_type 'mamba') are supported"),
    "use_bias": (False, "in_proj/out_proj biases are not supported (every released Mamba has none)"),
    "use_conv_bias": (True, "a conv1d without bias is not supported (the mixer always adds conv1d.bias)"),
    "hidden_act": ("silu", "only the SiLU activation is supported"),
    "rms_norm": (True, "only RMSNorm is supported (not LayerNorm)"),
    "ssm_cfg": ({}, "a non-empty ssm_cfg (per-layer overrides) is not supported"),
}


def _read_config(folder):
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{path}: missing (a transformers Mamba folder needs config.json)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(raw).__name__}")
    for key in REQUIRED:
        if key not in raw:
            raise ValueError(f"{path}: key {key!r} is missing")
    c = {**DEFAULTS, **raw}
    for key, (value, why) in SUPPORTED.items():
        if c[key] != value:
            raise ValueError(f"{path}: key {key!r} = {c[key]!r} is not supported: {why}")
    if "n_layer" in raw and raw["n_layer"] != raw["num_hidden_layers"]:
        raise ValueError(f"{path}: key 'n_layer' = {raw['n_layer']!r} disagrees with "
                         f"'num_hidden_layers' = {raw['num_hidden_layers']!r}")
    if c["layer_norm_epsilon"] != RMSNORM_EPS:
        raise ValueError(f"{path}: key 'layer_norm_epsilon' = {c['layer_norm_epsilon']!r} is not supported: "
                         f"the RMSNorm of block.py uses {RMSNORM_EPS}")
    known = IGNORED_CONFIG_KEYS | set(DEFAULTS) | set(REQUIRED) | {"n_layer", "intermediate_size"}
    unknown = sorted(set(raw) - known)
    if unknown:
        warnings.warn(f"{path}: keys {unknown} are not known to this loader and were not used", stacklevel=3)
    try:
        cfg = MambaLMConfig(d_model=c["hidden_size"], n_layer=c["num_hidden_layers"], vocab_size=c["vocab_size"],
                            d_state=c["state_size"], d_conv=c["conv_kernel"], expand=c["expand"],
                            dt_rank=c["time_step_rank"], tie_embeddings=c["tie_word_embeddings"],
                            residual_in_fp32=c["residual_in_fp32"], layer_norm_epsilon=c["layer_norm_epsilon"],
                            eos_token_id=c["eos_token_id"])
    except ValueError as e:  # name the file; the config's field names are transformers' keys' twins
        raise ValueError(f"{path}: {e}") from None
    if "intermediate_size" in raw and raw["intermediate_size"] != cfg.d_inner:
        raise ValueError(f"{path}: key 'intermediate_size' = {raw['intermediate_size']!r} must equal "
                         f"expand * hidden_size = {cfg.d_inner}")
    return cfg


def _weight_files(folder):
    """{tensor name: file} from model.safetensors or its sharded index."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return None, single
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a safetensors index with a 'weight_map' ({e!r})") from None
        for name, shard in weight_map.items():
            if not (folder / shard).is_file():
                raise ValueError(f"{index}: key {name!r} points to {shard!r}, which is missing")
        return {name: folder / shard for name, shard in weight_map.items()}, index
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise ValueError(f"{folder}: only safetensors weights are supported (found a PyTorch pickle, which needs "
                         f"torch to read); save with save_pretrained(..., safe_serialization=True)")
    raise ValueError(f"{single}: missing (and no model.safetensors.index.json for a sharded checkpoint)")


def _load_tensors(folder):
    """Every tensor as a NumPy array, with the file it came from."""
    from safetensors import safe_open

    weight_map, source = _weight_files(folder)
    files = sorted(set(weight_map.values())) if weight_map else [source]
    tensors, origin = {}, {}
    for file in files:
        try:
            with safe_open(str(file), framework="np") as f:
                for name in f.keys():
                    if weight_map is not None and weight_map.get(name) != file:
                        raise ValueError(f"{file}: key {name!r} is not listed for this shard in {source.name}")
                    dt = f.get_slice(name).get_dtype()
                    if dt not in ("F16", "F32", "F64"):
                        raise ValueError(f"{file}: key {name!r} has dtype {dt}; only F16, F32 and F64 are "
                                         f"supported (NumPy has no bfloat16: convert the checkpoint to float32)")
                    tensors[name], origin[name] = f.get_tensor(name), file
        except ValueError:
            raise
        except Exception as e:  # a truncated or foreign file: safetensors raises its own error types
            raise ValueError(f"{file}: not a readable safetensors file ({e})") from None
    if weight_map is not None:
        for name, file in weight_map.items():
            if name not in tensors:
                raise ValueError(f"{file}: key {name!r} is listed in {source.name} but not stored")
    return tensors, origin, source


def from_pretrained(path, dtype=np.float32):
    """Read a transformers ``MambaForCausalLM`` folder into our parameters.

    Args:
        path: folder with config.json and model.safetensors (or a sharded index).
        dtype: np.float32 or np.float64; float16 tensors are upcast (see model.py on precision).
    Returns:
        params: dict keyed as :meth:`MambaLMConfig.param_shapes`, C-contiguous ``dtype`` arrays.
        cfg: MambaLMConfig.
    """
    if dtype not in (np.float32, np.float64) and np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be np.float32 or np.float64, got {dtype!r}")
    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise ValueError(f"path must be a model folder, {str(folder)!r} is not a directory")
    cfg = _read_config(folder)
    tensors, origin, source = _load_tensors(folder)
    shapes = cfg.param_shapes()
    expected = {("backbone." + k if k != "lm_head.weight" else k): k for k in shapes}
    if cfg.tie_embeddings and "lm_head.weight" in tensors:
        # Some exports store the tied head anyway; accept it only if it really is the embedding.
        if not np.array_equal(tensors["lm_head.weight"], tensors.get("backbone.embeddings.weight")):
            raise ValueError(f"{origin['lm_head.weight']}: key 'lm_head.weight' differs from "
                             f"'backbone.embeddings.weight' but config.json says tie_word_embeddings=true")
        del tensors["lm_head.weight"]
    for name in sorted(set(expected) - set(tensors)):
        raise ValueError(f"{source}: key {name!r} is missing")
    for name in sorted(set(tensors) - set(expected)):
        raise ValueError(f"{origin[name]}: key {name!r} is unexpected for a {cfg.n_layer}-layer Mamba LM")
    params = {}
    for name, key in expected.items():
        a = tensors[name]
        if tuple(a.shape) != shapes[key]:
            raise ValueError(f"{origin[name]}: key {name!r} has shape {tuple(a.shape)}, config.json implies "
                             f"{shapes[key]}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{origin[name]}: key {name!r} contains NaN or Inf")
        params[key] = np.ascontiguousarray(a, dtype=dtype)
    return params, cfg


def load_tokenizer(path):
    """The folder's ``tokenizer.json`` as a ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer

    file = pathlib.Path(path) / "tokenizer.json"
    if not file.is_file():
        raise ValueError(f"{file}: missing (the generate command needs the model's tokenizer.json)")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a plain Exception on malformed files
        raise ValueError(f"{file}: not a readable tokenizers file ({e})") from None
