"""The language model: transformers parity on the committed fixture, step mode, gradients,
sampling, the loader's refusals and the generate command (issue 16). No torch needed."""
import json
import pathlib
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from mamba_from_scratch.gradcheck import numerical_grad, rel_error
from mamba_from_scratch.lm import (
    MambaLMConfig,
    cross_entropy_backward,
    cross_entropy_forward,
    embedding_backward,
    embedding_forward,
    from_pretrained,
    generate,
    init_lm_params,
    init_lm_state,
    lm_backward,
    lm_forward,
    lm_step,
    load_tokenizer,
    next_token_probs,
    sample_next,
    state_from_cache,
)
from mamba_from_scratch.lm import bench as lm_bench
from mamba_from_scratch.lm.cli import main as cli_main

FIXTURE = pathlib.Path(__file__).parent / "data" / "tiny-mamba-hf"
EXPECTED = np.load(FIXTURE / "expected.npz")
# Tiny, distinct sizes so that a swapped axis fails: d_inner 6, n 4, rank 2, k 3, vocab 7.
TINY = dict(d_model=3, n_layer=2, d_state=4, d_conv=3, dt_rank=2, vocab_size=7)


def random_lm(seed, tie=True, dtype=np.float64):
    """Init, then perturb every parameter so no gradient is trivially zero."""
    cfg = MambaLMConfig(**TINY, tie_embeddings=tie)
    rng = np.random.default_rng(seed)
    p = init_lm_params(cfg, rng, dtype=np.float64)
    p = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in p.items()}
    for k in p:  # delta ~ 0.7, so the scan's gradients are not all tiny
        if k.endswith("dt_proj.bias"):
            p[k] = 0.5 * rng.normal(size=p[k].shape)
    return {k: v.astype(dtype) for k, v in p.items()}, cfg


# ---- parity with transformers (fixture made by scripts/make_lm_fixture.py) ----

def test_fixture_logits_match_transformers_float32():
    params, cfg = from_pretrained(FIXTURE)
    assert params["embeddings.weight"].dtype == np.float32 and cfg.tie_embeddings and "lm_head.weight" not in params
    logits, _ = lm_forward(params, cfg, EXPECTED["input_ids"])
    assert logits.dtype == np.float32 and logits.shape == EXPECTED["logits"].shape == (1, 7, 512)
    err = rel_error(logits, EXPECTED["logits"])
    assert err < 1e-4, f"logits differ from transformers: rel error {err:.2e}"


def test_fixture_logits_match_transformers_float64():
    params, cfg = from_pretrained(FIXTURE, dtype=np.float64)
    logits, _ = lm_forward(params, cfg, EXPECTED["input_ids"], backend="numpy")
    assert logits.dtype == np.float64
    assert rel_error(logits, EXPECTED["logits"]) < 1e-4


def test_fixture_greedy_tokens_match_transformers_exactly():
    params, cfg = from_pretrained(FIXTURE)
    ids = generate(params, cfg, EXPECTED["input_ids"], 20, temperature=0)
    assert ids.shape == EXPECTED["greedy_ids"].shape == (1, 27)
    np.testing.assert_array_equal(ids, EXPECTED["greedy_ids"])


def test_fixture_tokenizer_round_trip():
    tok = load_tokenizer(FIXTURE)
    meta = json.loads((FIXTURE / "expected.json").read_text())
    assert tok.encode(meta["prompt"]).ids == EXPECTED["input_ids"][0].tolist()
    assert tok.decode(EXPECTED["greedy_ids"][0].tolist()) == meta["greedy_text"]


# ---- step mode ----

@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_steps_equal_full_forward(backend):
    params, cfg = random_lm(0)
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(2, 6))
    full, _ = lm_forward(params, cfg, ids, backend)                                   # (2, 6, V)
    state = init_lm_state(cfg, 2, np.float64)
    for t in range(ids.shape[1]):
        step, state = lm_step(params, cfg, ids[:, t], state)
        assert rel_error(step, full[:, t]) < 1e-10, f"position {t}"
    # Prefill with the full forward, then step: the state it leaves equals l steps' state.
    _, cache = lm_forward(params, cfg, ids[:, :4], backend)
    state = state_from_cache(cache)
    for t in (4, 5):
        step, state = lm_step(params, cfg, ids[:, t], state)
        assert rel_error(step, full[:, t]) < 1e-10, f"position {t} after prefill"


def test_greedy_generation_equals_full_forward_token_by_token():
    params, cfg = from_pretrained(FIXTURE, dtype=np.float64)
    prompt = EXPECTED["input_ids"]
    ids = generate(params, cfg, prompt, 12, temperature=0)
    logits, _ = lm_forward(params, cfg, ids, backend="numpy")                         # (1, 19, V)
    l = prompt.shape[1]
    np.testing.assert_array_equal(ids[0, l:], logits[0, l - 1:-1].argmax(-1))


def test_prefill_shorter_than_conv_window():
    params, cfg = random_lm(2)                                                         # k = 3 > 1 prompt token
    ids = np.array([[3, 1, 4, 1, 5]])
    full, _ = lm_forward(params, cfg, ids)
    _, cache = lm_forward(params, cfg, ids[:, :1])
    state = state_from_cache(cache)
    for t in range(1, 5):
        step, state = lm_step(params, cfg, ids[:, t], state)
        assert rel_error(step, full[:, t]) < 1e-10


# ---- gradients (float64 finite differences) ----

def test_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(3)
    assert abs(cross_entropy_forward(np.zeros((2, 3, 5)), np.zeros((2, 3), int))[0] - np.log(5)) < 1e-15
    logits = rng.normal(size=(2, 3, 5)) * 3
    targets = rng.integers(0, 5, size=(2, 3))
    loss, cache = cross_entropy_forward(logits, targets)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    hand = -np.mean(np.log(np.take_along_axis(p, targets[..., None], -1)))
    assert abs(loss - hand) < 1e-14
    dlogits = cross_entropy_backward(0.7, cache)
    num = numerical_grad(lambda: 0.7 * cross_entropy_forward(logits, targets)[0], logits)
    assert dlogits.shape == logits.shape and rel_error(dlogits, num) < 1e-8


def test_embedding_backward_adds_repeated_ids():
    w = np.arange(12.0).reshape(4, 3)
    ids = np.array([[1, 3, 1]])
    out, cache = embedding_forward(ids, w)
    np.testing.assert_array_equal(out, w[[1, 3, 1]][None])
    dout = np.arange(9.0).reshape(1, 3, 3)
    dids, dw = embedding_backward(dout, cache)
    want = np.zeros((4, 3))
    want[1], want[3] = dout[0, 0] + dout[0, 2], dout[0, 1]
    assert dids is None
    np.testing.assert_array_equal(dw, want)


# The numpy backend only: the LM's own parts (embedding, head, loss) do not depend on it, and
# the blocks' compiled path has its finite-difference checks in test_model.py.
@pytest.mark.parametrize("tie, backend", [(True, "numpy"), (False, "numpy")])
def test_lm_gradients_finite_differences(tie, backend):
    params, cfg = random_lm(4, tie=tie)
    rng = np.random.default_rng(5)
    ids = np.array([[1, 5, 1, 0, 6], [2, 2, 3, 4, 1]])                             # repeated ids: scatter-add
    targets = rng.integers(0, cfg.vocab_size, size=ids.shape)

    def loss():
        return cross_entropy_forward(lm_forward(params, cfg, ids, backend)[0], targets)[0]

    logits, cache = lm_forward(params, cfg, ids, backend)
    _, ce_cache = cross_entropy_forward(logits, targets)
    grads, dx = lm_backward(cross_entropy_backward(1.0, ce_cache), cache)
    assert set(grads) == set(params) and dx.shape == (2, 5, cfg.d_model)
    for k in params:
        assert grads[k].shape == params[k].shape, k
        # The embedding enters twice when tied (lookup and head): its curvature makes the
        # central difference's eps^2 error 3e-6 at eps 1e-5, so it gets 1e-6 (3e-8).
        eps = 1e-6 if k in ("embeddings.weight", "lm_head.weight") else 1e-5
        err = rel_error(grads[k], numerical_grad(loss, params[k], eps=eps))
        assert err < 1e-6, f"{k}: rel error {err:.2e}"
    if not tie:  # untied, the embedding's only use is the lookup: its rows' gradients are dx, summed
        want = np.zeros_like(params["embeddings.weight"])
        np.add.at(want, ids.reshape(-1), dx.reshape(-1, cfg.d_model))
        assert rel_error(grads["embeddings.weight"], want) < 1e-14


# ---- sampling ----

def test_temperature_zero_is_greedy_and_top_k_one_too():
    params, cfg = from_pretrained(FIXTURE)
    prompt = EXPECTED["input_ids"]
    greedy = generate(params, cfg, prompt, 20, temperature=0)
    np.testing.assert_array_equal(greedy, EXPECTED["greedy_ids"])
    np.testing.assert_array_equal(generate(params, cfg, prompt, 20, temperature=0.8, top_k=1, seed=9), greedy)


def test_sampling_reproducible_with_seed():
    params, cfg = from_pretrained(FIXTURE)
    prompt = np.repeat(EXPECTED["input_ids"], 2, axis=0)                            # batch of 2
    a = generate(params, cfg, prompt, 15, temperature=1.0, seed=11)
    b = generate(params, cfg, prompt, 15, temperature=1.0, seed=11)
    c = generate(params, cfg, prompt, 15, temperature=1.0, seed=12)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 22) and not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1]), "the two rows must draw independently"


def test_sample_next_follows_softmax_and_top_k():
    rng = np.random.default_rng(0)
    logits = np.array([2.0, 1.0, 0.0, -1.0, 0.5])
    m = 40000
    draws = sample_next(np.tile(logits, (m, 1)), 0.5, None, rng)                    # (m,)
    p = np.exp(logits / 0.5) / np.exp(logits / 0.5).sum()
    freq = np.bincount(draws, minlength=5) / m
    assert np.abs(freq - p).max() < 5 * np.sqrt(p.max() / m), (freq, p)           # 5 standard errors
    draws = sample_next(np.tile(logits, (m, 1)), 1.0, 2, rng)
    assert set(np.unique(draws)) == {0, 1}                                          # only the 2 largest
    p2 = np.exp(logits[:2]) / np.exp(logits[:2]).sum()
    assert abs((draws == 0).mean() - p2[0]) < 5 * np.sqrt(0.25 / m)


def test_next_token_probs_closed_forms():
    q = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    z = np.log(q).astype(np.float32)                                              # softmax(z) = q / 10
    p = next_token_probs(z)
    assert p.dtype == np.float64 and p.shape == (2, 4)
    assert rel_error(p, q / 10) < 1e-7                                            # float32 logits
    assert rel_error(next_token_probs(np.log(q), 0.5), q ** 2 / 30) < 1e-14       # 1/T = 2 squares the odds
    assert rel_error(next_token_probs(np.log(q), 1.0, 2), np.array([[0, 0, 3, 4], [4, 3, 0, 0]]) / 7) < 1e-14
    assert rel_error(next_token_probs(np.log(q), 1.0, 9), q / 10) < 1e-14        # top_k > V keeps all
    np.testing.assert_array_equal(next_token_probs(z, 0.0), [[0, 0, 0, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(next_token_probs(np.array([[2.0, 1.0, 2.0]]), 0), [[1, 0, 0]])  # first max
    np.testing.assert_array_equal(next_token_probs(np.array([[2.0, 1.0, 2.0, 0.0]]), 1.0, 1), [[0.5, 0, 0.5, 0]])


def test_next_token_probs_no_overflow():
    p = next_token_probs(np.array([[1000.0, 0.0, -1000.0]]), 1e-3)                 # z/T would be 1e6
    assert np.all(np.isfinite(p)) and p[0, 0] == 1.0
    p = next_token_probs(np.array([[1e30, 1e30]]), 1.0)
    np.testing.assert_array_equal(p, [[0.5, 0.5]])
    assert rel_error(next_token_probs(np.array([[3.0, -2.0, 0.5]]), 1e8), np.full((1, 3), 1 / 3)) < 1e-7


def test_sample_next_draws_from_next_token_probs():
    """sample_next's draw is the inverse CDF of next_token_probs: with the same uniform number,
    the token is the first whose cumulative probability exceeds it."""
    logits = np.random.default_rng(4).normal(size=(6, 9))
    for temperature, top_k in ((1.0, None), (0.7, 3), (2.0, 1)):
        ids = sample_next(logits, temperature, top_k, np.random.default_rng(8))
        u = np.random.default_rng(8).random(6)
        cdf = np.cumsum(next_token_probs(logits, temperature, top_k), axis=1)
        want = np.array([np.searchsorted(c, ui * c[-1], side="right") for c, ui in zip(cdf, u)])
        np.testing.assert_array_equal(ids, want)
        assert np.all(next_token_probs(logits, temperature, top_k)[np.arange(6), ids] > 0)


@pytest.mark.parametrize("args, match", [
    ((np.zeros(4),), "logits"), ((np.zeros((1, 4), int),), "logits"), ((np.array([[0.0, np.nan]]),), "logits"),
    ((np.zeros((1, 4)), -1.0), "temperature"), ((np.zeros((1, 4)), float("inf")), "temperature"),
    ((np.zeros((1, 4)), 1.0, 0), "top_k"), ((np.zeros((1, 4)), 1.0, 2.5), "top_k"),
])
def test_next_token_probs_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        next_token_probs(*args)


def test_eos_stops_generation():
    params, cfg = from_pretrained(FIXTURE)
    cfg.eos_token_id = int(EXPECTED["greedy_ids"][0, 10])                           # the 4th greedy token
    ids = generate(params, cfg, EXPECTED["input_ids"], 20, temperature=0)
    np.testing.assert_array_equal(ids, EXPECTED["greedy_ids"][:, :11])
    assert generate(params, cfg, EXPECTED["input_ids"], 20, temperature=0, stop_at_eos=False).shape == (1, 27)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=-1), "max_new_tokens"), (dict(temperature=-0.5), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(top_k=0), "top_k"), (dict(seed=-1), "seed"),
    (dict(input_ids=np.array([[1.0, 2.0]])), "input_ids"), (dict(input_ids=np.array([[1, 512]])), "input_ids"),
    (dict(input_ids=np.array([1, 2])), "input_ids"),
])
def test_generate_rejects_bad_arguments(kwargs, match):
    params, cfg = from_pretrained(FIXTURE)
    args = dict(input_ids=EXPECTED["input_ids"], max_new_tokens=3, temperature=1.0, top_k=None, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(params, cfg, **args)


# ---- from_pretrained refuses every bad folder, naming the file and the key ----

def copy_fixture(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(FIXTURE, dst)
    return dst


def edit_config(folder, **changes):
    c = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            c.pop(k)
        else:
            c[k] = v
    (folder / "config.json").write_text(json.dumps(c))


def edit_tensors(folder, fn):
    from safetensors.numpy import load_file
    t = load_file(str(folder / "model.safetensors"))
    fn(t)
    save_file(t, str(folder / "model.safetensors"))


@pytest.mark.parametrize("changes, key", [
    (dict(use_bias=True), "use_bias"), (dict(use_conv_bias=False), "use_conv_bias"),
    (dict(model_type="mamba2"), "model_type"), (dict(hidden_act="gelu"), "hidden_act"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"), (dict(intermediate_size=100), "intermediate_size"),
    (dict(hidden_size=None), "hidden_size"), (dict(state_size=None), "state_size"),
    (dict(rms_norm=False), "rms_norm"), (dict(ssm_cfg={"d_state": 8}), "ssm_cfg"),
    (dict(n_layer=3), "n_layer"), (dict(time_step_rank=0), "dt_rank"), (dict(vocab_size="512"), "vocab_size"),
])
def test_unsupported_or_bad_config(tmp_path, changes, key):
    folder = copy_fixture(tmp_path)
    edit_config(folder, **changes)
    with pytest.raises(ValueError, match=rf"config\.json.*{key}"):
        from_pretrained(folder)


def test_config_with_wrong_shapes(tmp_path):
    folder = copy_fixture(tmp_path)
    edit_config(folder, state_size=8)                                                # the file has n = 16
    with pytest.raises(ValueError, match=r"model\.safetensors: key 'backbone\.layers\.0\.mixer\.x_proj\.weight' "
                                         r"has shape \(36, 128\), config\.json implies \(20, 128\)"):
        from_pretrained(folder)


def test_missing_extra_and_wrong_shape_tensors(tmp_path):
    folder = copy_fixture(tmp_path)
    edit_tensors(folder, lambda t: t.pop("backbone.layers.1.mixer.D"))
    with pytest.raises(ValueError, match=r"model\.safetensors: key 'backbone\.layers\.1\.mixer\.D' is missing"):
        from_pretrained(folder)
    folder = copy_fixture(tmp_path / "b")
    edit_tensors(folder, lambda t: t.update({"backbone.layers.2.norm.weight": np.ones(64, np.float32)}))
    with pytest.raises(ValueError, match=r"model\.safetensors: key 'backbone\.layers\.2\.norm\.weight' is unexpected"):
        from_pretrained(folder)
    folder = copy_fixture(tmp_path / "c")
    edit_tensors(folder, lambda t: t.update({"backbone.norm_f.weight": np.ones(63, np.float32)}))
    with pytest.raises(ValueError, match=r"key 'backbone\.norm_f\.weight' has shape \(63,\)"):
        from_pretrained(folder)
    folder = copy_fixture(tmp_path / "d")
    edit_tensors(folder, lambda t: t["backbone.layers.0.mixer.D"].__setitem__(3, np.nan))
    with pytest.raises(ValueError, match=r"key 'backbone\.layers\.0\.mixer\.D' contains NaN"):
        from_pretrained(folder)


def test_tied_head_must_equal_embedding(tmp_path):
    folder = copy_fixture(tmp_path)
    edit_tensors(folder, lambda t: t.update({"lm_head.weight": t["backbone.embeddings.weight"].copy()}))
    p, _ = from_pretrained(folder)                                                  # equal: accepted, dropped
    assert "lm_head.weight" not in p
    edit_tensors(folder, lambda t: t.update({"lm_head.weight": t["lm_head.weight"] + 1}))
    with pytest.raises(ValueError, match=r"model\.safetensors: key 'lm_head\.weight' differs"):
        from_pretrained(folder)


def test_untied_head_is_loaded_and_used(tmp_path):
    folder = copy_fixture(tmp_path)
    head = np.random.default_rng(0).normal(size=(512, 64)).astype(np.float32)
    edit_tensors(folder, lambda t: t.update({"lm_head.weight": head}))
    edit_config(folder, tie_word_embeddings=False)
    params, cfg = from_pretrained(folder)
    assert not cfg.tie_embeddings and np.array_equal(params["lm_head.weight"], head)
    logits, cache = lm_forward(params, cfg, EXPECTED["input_ids"])
    np.testing.assert_allclose(logits, cache[-1] @ head.T, rtol=1e-6)
    edit_tensors(folder, lambda t: t.pop("lm_head.weight"))
    with pytest.raises(ValueError, match=r"key 'lm_head\.weight' is missing"):
        from_pretrained(folder)


def test_bfloat16_tensor_is_refused(tmp_path):
    folder = copy_fixture(tmp_path)
    # safetensors' NumPy API cannot write bfloat16: write the header by hand (2 bytes per value).
    header = json.dumps({"backbone.norm_f.weight": {"dtype": "BF16", "shape": [64], "data_offsets": [0, 128]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + b"\x80\x3f" * 64)
    with pytest.raises(ValueError, match=r"model\.safetensors: key 'backbone\.norm_f\.weight' has dtype BF16"):
        from_pretrained(folder)


def test_missing_files_and_pickles(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        from_pretrained(tmp_path / "nowhere")
    folder = copy_fixture(tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=r"config\.json: missing"):
        from_pretrained(folder)
    folder = copy_fixture(tmp_path / "b")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model\.safetensors: missing"):
        from_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="only safetensors weights are supported"):
        from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"garbage!")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        from_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"tokenizer\.json: missing"):
        load_tokenizer(folder)


def test_sharded_checkpoint_loads_and_bad_index_is_refused(tmp_path):
    from safetensors.numpy import load_file
    folder = copy_fixture(tmp_path)
    t = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = sorted(t)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: t[k] for k in keys}, str(folder / file))
    weight_map = {k: f for f, keys in shards.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sharded, _ = from_pretrained(folder)
    single, _ = from_pretrained(FIXTURE)
    assert sharded.keys() == single.keys() and all(np.array_equal(sharded[k], single[k]) for k in single)
    weight_map[names[0]] = "model-00003-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match=rf"index\.json: key '{names[0]}' points to 'model-00003"):
        from_pretrained(folder)


def test_unknown_config_key_warns(tmp_path):
    folder = copy_fixture(tmp_path)
    edit_config(folder, some_new_option=True)
    with pytest.warns(UserWarning, match="some_new_option"):
        from_pretrained(folder)


def test_from_pretrained_rejects_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        from_pretrained(FIXTURE, dtype=np.float16)


# ---- the generate command ----

def test_cli_generates_from_fixture(capsys):
    meta = json.loads((FIXTURE / "expected.json").read_text())
    rc = cli_main(["--model", str(FIXTURE), "--prompt", meta["prompt"], "--max-new-tokens", "20", "--temperature", "0"])
    out = capsys.readouterr().out
    assert rc == 0
    text, stats = out.rstrip("\n").rsplit("\n", 1)
    # The streamed text is the greedy continuation, except the replacement characters of
    # half-decoded byte tokens, which the stream holds back until they complete.
    want = meta["greedy_text"]
    assert text.replace("\ufffd", "") == want.replace("\ufffd", ""), (text, want)
    assert stats.startswith("prefill: 7 tokens in ") and "decode: 19 tokens in " in stats
    assert stats.count("tokens/s") == 2 and "load average" in stats


@pytest.mark.parametrize("argv, match", [
    (["--prompt", "x"], "--model"), (["--model", "/nonexistent", "--prompt", "x"], "not a directory"),
    (["--model", str(FIXTURE), "--prompt", "x", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["--model", str(FIXTURE), "--prompt", "x", "--temperature", "-1"], "--temperature"),
    (["--model", str(FIXTURE), "--prompt", "", ], "--prompt"),
])
def test_cli_bad_arguments_one_line_exit_2(capsys, argv, match):
    with pytest.raises(SystemExit) as e:
        raise SystemExit(cli_main(argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and match in err and err.count("\n") == 1, err


# ---- lm.bench ----

def test_bench_runs_and_writes_its_section(tmp_path, capsys):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    argv = ["--d-model", "8", "--n-layer", "1", "--vocab-size", "11", "--prompt-len", "5", "--new-tokens", "3",
            "--repeats", "2", "--blas-threads", "1", "2", "--out", str(doc)]
    assert lm_bench.main(argv) == 0
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n") and "<!-- BEGIN generated: lm -->" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 4 and [r.split("|")[2].strip() for r in rows] == ["1", "1", "2", "2"]
    assert all(len(r.split("|")[5].split()) == 3 for r in rows)                    # the load average, 3 numbers
    assert "Median with 1 BLAS thread: prefill **" in text and "Median with 2 BLAS threads" in text
    assert lm_bench.main(argv) == 0 and doc.read_text().count("BEGIN generated: lm") == 1   # replaced, not appended
    capsys.readouterr()
    assert lm_bench.main(["--repeats", "0"]) == 2 and "--repeats" in capsys.readouterr().err
    assert lm_bench.main(["--blas-threads", "0"]) == 2 and "--blas-threads" in capsys.readouterr().err


def test_lesson_12_carries_the_current_fixture():
    """Lesson 12's release is standalone, so it carries copies of the fixture (lessons/_data/make_12.py):
    they must be the fixture's files and transformers' outputs, byte for byte."""
    data = pathlib.Path(__file__).parents[1] / "lessons" / "_data"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (data / f"12_tiny-mamba-hf_{name}").read_bytes() == (FIXTURE / name).read_bytes(), \
            f"{name}: rerun python lessons/_data/make_12.py"
    frozen = np.load(data / "12_lm.npz")
    for ours, theirs in (("hf_input_ids", "input_ids"), ("hf_logits", "logits"), ("hf_greedy_ids", "greedy_ids")):
        np.testing.assert_array_equal(frozen[ours], EXPECTED[theirs])
