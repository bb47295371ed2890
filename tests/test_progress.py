"""Progress output stays bounded when it is not a terminal (logs), and sparse on a terminal."""
import io

from mamba_from_scratch.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def run(out, steps=5000, **kwargs):
    bar = Progress(steps, "train", file=out, **kwargs)
    for step in range(steps):
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}", tok_s="12,345")   # every step, as the loops do
        bar.update()
    bar.close()
    return out.getvalue()


def test_not_a_terminal_prints_a_bounded_number_of_plain_lines():
    text = run(io.StringIO())
    lines = text.splitlines()
    assert 20 <= len(lines) <= 21, len(lines)            # one per total/20 steps (+ the end)
    assert "\r" not in text
    assert lines[0] == "train: 250/5000, loss=0.0040, tok_s=12,345"
    assert lines[-1].startswith("train: 5000/5000, loss=0.0002")


def test_every_and_a_final_line_for_an_uneven_count():
    lines = run(io.StringIO(), steps=10, every=3).splitlines()
    assert [line.split(",")[0] for line in lines] == ["train: 3/10", "train: 6/10", "train: 9/10", "train: 10/10"]


def test_disabled_prints_nothing():
    assert run(io.StringIO(), enabled=False) == ""


def test_terminal_postfix_does_not_force_redraws():
    """5000 fast steps with a postfix each: the bar redraws at its interval, not per step."""
    text = run(FakeTerminal(), mininterval=0.5)
    assert text.count("\r") < 30, text.count("\r")
    assert "5000/5000" in text


def test_write_prints_even_when_disabled(capsys):
    Progress(10, "x", enabled=False, file=io.StringIO()).write("val error 0.5")
    assert capsys.readouterr().out == "val error 0.5\n"


def test_demo_training_log_is_bounded(capsys):
    """The demo's loop on non-terminal stderr (pytest's capture): about 20 lines for 200 steps,
    where the bar it replaced wrote one per step."""
    from mamba_from_scratch import demo
    from mamba_from_scratch.models.mamba import MambaConfig
    cfg = MambaConfig(d_model=8, n_layer=1, d_state=4, d_in=3, d_out=1)
    demo.train(cfg, steps=200, batch=2, n_examples=5, d=2, lr=1e-3, seed=0, backend="numpy", progress=True)
    err = capsys.readouterr().err
    assert 10 <= len(err.splitlines()) <= 21 and "\r" not in err
    assert err.splitlines()[-1].startswith("demo: 200/200, loss=")
