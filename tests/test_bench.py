"""The benchmark's parts: sizes from the ops, peers that agree with the generated code, timing, the plot.

No test here times anything against a limit: floors belong to ``derive bench``, not to tests.
PyTorch and HIPS autograd are optional; tests that need them skip without them.
"""
import dataclasses
import io
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from benchmarks import blas, references
from benchmarks.cases import Case, NotBenchmarked, bench_sizes
from benchmarks.run import run
from benchmarks.svg import sweep_svg
from benchmarks.timing import Timing, interleaved, peak_memory
from derive.engine import check
from derive.define.registry import get

ROOT = Path(__file__).resolve().parent.parent
needs_torch = pytest.mark.skipif(not references.available("torch"), reason="PyTorch is not installed")
needs_autograd = pytest.mark.skipif(not references.available("autograd"), reason="HIPS autograd is not installed")


def test_bench_sizes_name_only_the_ops_sizes_and_hyper_parameters(op):
    if not op.bench_sizes:
        pytest.skip(f"{op.name} has no bench_sizes")
    sizes, hyper = bench_sizes(op)
    assert set(hyper) == {h.name for h in op.hyper}
    half, _ = bench_sizes(op, 0.5)
    batch = op.sizes[0]
    assert half[batch] == round(sizes[batch] / 2) and all(half[s] == sizes[s] for s in sizes if s != batch)


def test_wrong_bench_sizes_are_a_value_error_that_names_them():
    op = dataclasses.replace(get("linear"), bench_sizes={"N": 2, "D": 3, "Q": 4})
    with pytest.raises(ValueError, match=r"unknown \['Q'\], missing \['M'\]"):
        bench_sizes(op)
    with pytest.raises(NotBenchmarked, match="no bench_sizes"):
        bench_sizes(dataclasses.replace(op, bench_sizes={}))


def small_case(op, dtype=np.float64):
    """The default form, as derive bench times it (its peers take the hyper-parameters, not the options)."""
    hyper = {h.name: value for h in op.hyper for name, value in check.hyper_values(op).items() if name == h.name}
    return Case(op, dtype, check.example_sizes(op), hyper)


@needs_torch
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_generated_code_agrees_with_pytorch(op, dtype, tolerance):
    if references.torch_reference(op.name) is None:
        pytest.skip(f"no PyTorch reference for {op.name}")
    case = small_case(op, dtype)
    assert case.disagreement(case.peers()["torch"]) < tolerance


@needs_autograd
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_generated_code_agrees_with_autograd(op, dtype, tolerance):
    if references.autograd_reference(op.name) is None:
        pytest.skip(f"no autograd reference for {op.name}")
    case = small_case(op, dtype)
    assert case.disagreement(case.peers()["autograd"]) < tolerance


def test_the_bare_products_are_what_linear_computes(rng):
    x, W, b, dout = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5), \
        rng.standard_normal((4, 5))
    from generated import linear
    out, cache = linear.forward(x, W, b)
    grads = linear.backward(dout, cache)
    net, dx, dW = references.BARE["linear"][1](x, W, b, dout)
    assert np.allclose(net + b, out) and np.allclose(dx, grads["x"]) and np.allclose(dW, grads["W"])


@pytest.mark.parametrize("name", sorted(set(references.BARE) - {"linear"}))
def test_the_hand_written_yardsticks_are_what_the_ops_compute(name):
    case = small_case(get(name))
    case.inputs = {k: v * 3 + 2 if k == "x" else v for k, v in case.inputs.items()}  # off-centre, for the norms
    out, grads = case._generated()
    mine = references.BARE[name][1](**case.inputs, **case.hyper, dout=case.dout)
    wanted = [out] + [grads[i.name] for i in case.op.differentiable]
    assert len(mine) == len(wanted)
    for ours, generated in zip(mine, wanted):
        np.testing.assert_allclose(ours, generated, rtol=1e-10, atol=1e-12)


# Ops whose references are ready before the ops are: PyTorch and autograd must agree on them.
UPCOMING = {
    "conv2d": ({"x": (2, 3, 6, 5), "W": (4, 3, 3, 2), "b": (4,)}, [{"stride": 1, "padding": 1},
                                                                  {"stride": 2, "padding": 0}]),
    "max_pool2d": ({"x": (2, 3, 6, 4)}, [{"kernel": 2, "stride": None}, {"kernel": 3, "stride": 1}]),
    "avg_pool2d": ({"x": (2, 3, 6, 4)}, [{"kernel": 2, "stride": None}, {"kernel": 3, "stride": 1}]),
    "batch_norm": ({"x": (4, 3, 2, 5), "gamma": (3,), "beta": (3,)}, [{"eps": 1e-5}]),
    "layer_norm": ({"x": (2, 3, 5), "gamma": (5,), "beta": (5,)}, [{"eps": 1e-5}]),
    "dropout": ({"x": (3, 4), "mask": (3, 4)}, [{"p": 0.25}]),
}
UPCOMING["batch_norm_2d"] = ({"x": (6, 3), "gamma": (3,), "beta": (3,)}, [{"eps": 1e-5}])


@needs_torch
@needs_autograd
@pytest.mark.parametrize("name", sorted(UPCOMING))
def test_pytorch_and_autograd_references_agree(name, rng):
    import torch
    from autograd import make_vjp
    op = name.removesuffix("_2d") if name.startswith("batch_norm") else name
    shapes, cases = UPCOMING[name]
    arrays = {k: rng.standard_normal(s) for k, s in shapes.items()}
    if "mask" in arrays:
        arrays["mask"] = (arrays["mask"] > 0).astype(float)
    wrt = [k for k in arrays if k != "mask"]
    for hyper in cases:
        tensors = {k: torch.tensor(a, requires_grad=k in wrt) for k, a in arrays.items()}
        out = references.torch_reference(op)(**tensors, **hyper)
        dout = rng.standard_normal(tuple(out.shape))
        grads = torch.autograd.grad(out, [tensors[k] for k in wrt], torch.tensor(dout))
        names = list(arrays)
        vjp, value = make_vjp(lambda *a: references.autograd_reference(op)(**dict(zip(names, a)), **hyper),
                              argnum=tuple(names.index(k) for k in wrt))(*arrays.values())
        assert np.allclose(value, out.detach().numpy(), atol=1e-12)
        for ours, theirs in zip(vjp(dout), grads):
            assert np.allclose(ours, theirs.numpy(), atol=1e-10)


def test_interleaved_timing_gives_one_sample_per_round_for_every_candidate():
    calls = {"a": 0, "b": 0}

    def count(name):
        def fn():
            calls[name] += 1
        return fn
    times = interleaved({"a": count("a"), "b": count("b")}, rounds=5)
    assert all(len(t.samples) == 5 and t.median > 0 for t in times.values())
    assert calls["a"] > 5 and calls["b"] > 5
    assert interleaved({}, rounds=5) == {}


def test_median_best_and_spread():
    timing = Timing((1.0, 2.0, 3.0, 4.0, 100.0))
    assert timing.median == 3.0 and timing.best == 1.0
    q1, q3 = 1.5, 52.0  # statistics.quantiles, "exclusive" method
    assert timing.spread == pytest.approx((q3 - q1) / 3.0)


def test_peak_memory_sees_numpy_arrays():
    assert peak_memory(lambda: np.ones(2 ** 20)) >= 8 * 2 ** 20


def test_the_sweep_plot_is_svg_with_a_line_per_peer():
    lines = {"generated": [(1, 1e-3), (2, 2e-3)], "torch": [(1, 5e-4), (2, 9e-4)], "derivation": [(1, 0.2), (2, 0.2)]}
    svg = sweep_svg([("sigmoid", "batch S", lines), ("tanh", "batch S", lines)], "title")
    root = ET.fromstring(svg)
    polylines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(polylines) == 2 * len(lines)


def test_an_op_without_bench_sizes_is_skipped_with_a_note():
    out = io.StringIO()
    run([dataclasses.replace(get("tanh"), bench_sizes={})], dtypes=("float64",), rounds=3, sweep=False,
        build=False, out=out)
    assert "skipped tanh: no bench_sizes on the op" in out.getvalue()


def test_bench_prints_the_tables_and_draws_the_sweep(tmp_path):
    plot = tmp_path / "sweep.svg"
    result = subprocess.run([sys.executable, "-m", "benchmarks", "tanh", "--dtype", "float32", "--rounds", "3",
                             "--no-build", "--plot", str(plot)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr  # 1: a floor was missed, which a busy machine may cause
    assert "| tanh " in result.stdout and "## Floors" in result.stdout and "## Size sweep" in result.stdout
    assert "other processes used" in result.stdout
    assert "gen/limit" in result.stdout
    assert "tanh vs limit" in result.stdout and "tanh vs torch" in result.stdout
    ET.fromstring(plot.read_text())


def _kernel(env) -> str:
    """The kernel NumPy's OpenBLAS runs in a fresh process with ``env``."""
    code = ("import numpy, threadpoolctl; print([i.get('architecture') for i in threadpoolctl.threadpool_info() "
            "if i['user_api'] == 'blas'][0])")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def _other_kernel():
    """An OpenBLAS kernel that is not the one this CPU gets, and the environment without the overrides."""
    if platform.machine() != "x86_64" or not references.available("threadpoolctl"):
        pytest.skip("needs threadpoolctl and an x86-64 OpenBLAS (its kernel names)")
    env = {k: v for k, v in os.environ.items() if k not in blas.SET_ASIDE}
    native = _kernel(env)
    other = "Nehalem" if native != "Nehalem" else "Sandybridge"
    assert _kernel({**env, "OPENBLAS_CORETYPE": other}) != native  # the variable does choose the kernel
    return native, other, env


BENCH_TANH = ["bench", "tanh", "--dtype", "float32", "--rounds", "3", "--no-build", "--no-sweep"]


def test_bench_times_the_kernel_a_user_has_and_says_so():
    native, other, env = _other_kernel()
    result = subprocess.run([sys.executable, "-m", "derive", *BENCH_TANH], cwd=ROOT, capture_output=True, text=True,
                            env={**env, "OPENBLAS_CORETYPE": other, "OPENBLAS_L2_SIZE": "512"})
    assert result.returncode in (0, 1), result.stderr
    header = result.stdout.split("## ")[0]
    assert f"OPENBLAS_CORETYPE={other}, OPENBLAS_L2_SIZE=512 set aside before NumPy loaded" in header
    assert f"kernel {native}," in header and "NumPy's BLAS: openblas" in header
    assert "PyTorch" not in header or "threads (its default)" in header


def test_bench_in_a_process_with_numpy_loaded_times_in_a_clean_child(monkeypatch, capfd):
    native, other, env = _other_kernel()
    monkeypatch.setenv("OPENBLAS_CORETYPE", other)
    monkeypatch.chdir(ROOT)
    from derive.cli import main
    assert main(BENCH_TANH) in (0, 1)
    header = capfd.readouterr().out.split("## ")[0]
    assert f"OPENBLAS_CORETYPE={other} set aside before NumPy loaded" in header and f"kernel {native}," in header
    assert os.environ["OPENBLAS_CORETYPE"] == other  # this process's environment is left as it was


def test_the_header_says_when_the_environment_chooses_the_kernel(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert "OPENBLAS_CORETYPE=Haswell in the environment: NumPy's OpenBLAS runs the kernel named there" \
        in "\n".join(blas.describe())


@pytest.mark.parametrize("name, upstream", [("tanh", True), ("mse", False)])
def test_the_limit_moves_every_input_and_output_once(name, upstream):
    case = small_case(get(name))
    out, grads = case._generated()
    moved = case.moved()
    expected = [*case.inputs.values(), *([case.dout] if upstream else []), *([out] if np.ndim(out) else []),
                *grads.values()]
    assert len(moved) == len(expected)
    for mine, theirs in zip(moved, expected):
        np.testing.assert_array_equal(mine, theirs)


def test_a_users_op_is_timed_from_the_module_generated_for_it():
    """`derive bench --ops FILE`: no module in generated/, so it is generated (and certified) for the run."""
    from derive.define.registry import load_file
    (op,) = load_file(ROOT / "examples" / "mish.py")
    case = Case(op, np.float64, *bench_sizes(op, scale=1 / 256))
    out, grads = case._generated()
    assert set(grads) == {"x"} and grads["x"].shape == case.inputs["x"].shape
    np.testing.assert_allclose(out, case.inputs["x"] * np.tanh(np.logaddexp(0, case.inputs["x"])), rtol=1e-12)
