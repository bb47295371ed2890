"""Freeze the models' outputs before the models/ refactor (issue 19): run once, at commit
9752040 (the code before the refactor), to write tests/data/model_reference.npz.

For every committed checkpoint in docs/checkpoints/: the forward pass on fixed input
(numba and numpy scan backends for the Mamba) and the gradients of a fixed upstream
gradient. For icl-train: the losses and final parameters of 3 quick steps of each model.
tests/test_models_reference.py checks today's code against these arrays, bit for bit.
"""
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "model_reference.npz")


def fixed_input(cfg, seed=0, b=3, l=9):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, l, cfg.d_in)).astype(np.float32), rng.normal(size=(b, l, cfg.d_out)).astype(np.float32)


def main(path_out=OUT):
    sys.path.insert(0, ROOT)
    from mamba_from_scratch.checkpoint import load_checkpoint
    from mamba_from_scratch.icl import train as icl_train
    ref = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "checkpoints", "*.npz"))):
        name = os.path.basename(path)[:-4]
        params, cfg, _, _ = load_checkpoint(path)
        x, dout = fixed_input(cfg)
        for backend in (("numba", "numpy") if type(cfg).__name__ == "MambaConfig" else ("numba",)):
            out, cache = icl_train.model_forward(params, cfg, x, backend)
            ref[f"{name}/{backend}/out"] = out
            grads = icl_train.model_backward(dout, cache)
            for k, g in grads.items():
                ref[f"{name}/{backend}/grad/{k}"] = g
    for model in ("mamba", "linear-tf"):
        tc = icl_train.TrainConfig(**{**icl_train.QUICK, "model": model, "steps": 3, "d": 8, "N": 8,
                                      "batch": 4, "eval_every": 100, "ckpt_every": 100, "n_val": 4})
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            result = icl_train.train(tc, tmp, progress=False)
        ref[f"train/{model}/log"] = np.asarray(result["log"] or [[0, 0, 0]], np.float64)
        for k, v in result["params"].items():
            ref[f"train/{model}/params/{k}"] = v
    # the softmax Transformer (not yet wired into icl-train) and the language model, on
    # seeded parameters
    from mamba_from_scratch import softmax_attention as sat
    from mamba_from_scratch.lm.model import MambaLMConfig, init_lm_params, lm_backward, lm_forward, state_from_cache
    scfg = sat.SoftmaxTFConfig(d_model=8, n_layer=2, n_head=2, d_mlp=12, d_in=5, d_out=2)
    sp = sat.init_params(scfg, np.random.default_rng(1))
    x, dout = fixed_input(scfg)
    out, cache = sat.model_forward(sp, scfg, x)
    ref["softmax-tf/out"] = out
    for k, g in sat.model_backward(dout, cache)[0].items():
        ref[f"softmax-tf/grad/{k}"] = g
    lcfg = MambaLMConfig(d_model=8, n_layer=2, vocab_size=16)
    lp = init_lm_params(lcfg, np.random.default_rng(2))
    ids = np.random.default_rng(3).integers(0, 16, size=(2, 7))
    for backend in ("numba", "numpy"):
        logits, cache = lm_forward(lp, lcfg, ids, backend)
        ref[f"lm/{backend}/logits"] = logits
        grads, dx = lm_backward(np.random.default_rng(4).normal(size=logits.shape).astype(np.float32), cache)
        ref[f"lm/{backend}/dx"] = dx
        for k, g in grads.items():
            ref[f"lm/{backend}/grad/{k}"] = g
        for i, s in enumerate(state_from_cache(cache)):
            ref[f"lm/{backend}/state/{i}/conv"], ref[f"lm/{backend}/state/{i}/h"] = s["conv"], s["h"]
    np.savez_compressed(path_out, **ref)
    print(f"wrote {path_out}: {len(ref)} arrays")


if __name__ == "__main__":
    main()
