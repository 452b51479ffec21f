"""The ``derive`` command: list, build, latex, code, check, bench, demo.

Exit codes: 0 success, 1 a check failed, 2 bad usage or bad input (one line
on stderr, never a traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


class UsageError(Exception):
    """Bad usage or bad input: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="derive", description="Backpropagation derived by SymPy: LaTeX and checked NumPy code.")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    sub.required = True

    sub.add_parser("list", help="the built-in ops and their forward formulas")
    cached = _Parser(add_help=False)
    cached.add_argument("--no-cache", action="store_true",
                        help="derive afresh: neither read nor write the derivation cache")

    p = sub.add_parser("build", parents=[cached],
                       help="derive every op, write generated/, check each against finite differences")
    p.add_argument("--out", default=None, help="directory to write (default: the package's generated/)")

    p = sub.add_parser("latex", parents=[cached], help="an op's or a network's derivation as LaTeX")
    p.add_argument("op", nargs="?", help="an op name, or 'article' for the article's network")
    p.add_argument("--chain", help="comma-separated ops, first layer first, e.g. linear,sigmoid,half_sse")
    p.add_argument("--lang", default="en", choices=("en", "zh"))
    p.add_argument("--form", default="index", choices=("index", "matrix"))
    p.add_argument("--batch", action="store_true", help="for a chain: keep the batch index (default: one sample)")

    p = sub.add_parser("code", parents=[cached], help="an op's generated NumPy module")
    p.add_argument("op")

    p = sub.add_parser("check", help="symbolic and finite-difference verification")
    p.add_argument("ops", nargs="*", help="ops to check (default: all)")

    p = sub.add_parser("bench", help="time the generated code against PyTorch, HIPS autograd and bare NumPy, "
                                     "and derive build cold and warm")
    p.add_argument("ops", nargs="*", help="ops to benchmark (default: all with bench_sizes)")
    p.add_argument("--dtype", default="both", choices=("float64", "float32", "both"))
    p.add_argument("--rounds", type=int, default=15, help="interleaved repeats per measurement (default 15)")
    p.add_argument("--no-sweep", action="store_true", help="skip the size sweep")
    p.add_argument("--no-build", action="store_true", help="skip timing derive build")
    p.add_argument("--plot", metavar="FILE", help="write the size sweep as an SVG picture")

    p = sub.add_parser("demo", help="train the article's 3-2-2 network with the generated code")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
        with _derivation_cache(args):
            return COMMANDS[args.command](args)
    except (UsageError, ValueError) as error:
        print(f"derive: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``derive bench | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _derivation_cache(args):
    """The on-disk derivation cache for commands that print derivations (``check`` always derives afresh)."""
    from derive.cache import DerivationCache, using
    wanted = hasattr(args, "no_cache") and not args.no_cache
    return using(DerivationCache() if wanted else None)


def _one_line(error) -> str:
    return " ".join(str(error).split())


def cmd_list(args) -> int:
    from codegen.text import text
    from derive.registry import registry
    for name, op in registry().items():
        node = op.output
        index = f"[{', '.join(map(str, node.index))}]" if node.index else ""
        print(f"{name:24} {node.name}{index} = {text(node.definition)}")
    return 0


def cmd_build(args) -> int:
    from pathlib import Path

    from codegen.build import GENERATED, build
    from derive.cache import active
    start = time.perf_counter()
    rows = build(Path(args.out) if args.out else GENERATED)
    print(f"{'op':24} {'derived':8} {'generated':10} {'fd max rel err':>15}  check")
    for r in rows:
        status = "ok" if r.passed else "FAILED"
        generated = "written" if r.written else "unchanged"
        print(f"{r.op:24} {'yes':8} {generated:10} {r.fd_error:15.1e}  {status}")
    store = active()
    cached = (f"derivations: {store.hits} from the cache in {store.directory}, {store.misses} derived"
              if store else "derivations: cache not used")
    print(f"{len(rows)} ops in {time.perf_counter() - start:.1f} s ({cached})", file=sys.stderr)
    return 0 if all(r.passed for r in rows) else 1


def cmd_latex(args) -> int:
    from codegen.render import op_latex
    from derive.engine import derive
    from derive.registry import get
    if args.chain and args.op:
        raise UsageError("give an op or --chain, not both")
    if args.chain or args.op == "article":
        return _print_chain(args)
    if not args.op:
        raise UsageError("latex: give an op (see 'derive list'), 'article', or --chain")
    print(op_latex(derive(get(args.op)), args.lang, forms=(args.form,)), end="")
    return 0


def _print_chain(args) -> int:
    from codegen.article import part1, part2
    from codegen.chain_tex import chain_blocks
    from derive.chain import chain
    if args.op == "article":
        blocks = part1(args.lang) + part2(args.lang)
    else:
        names = [n.strip() for n in args.chain.split(",") if n.strip()]
        blocks = chain_blocks(chain(names), args.lang, sample=not args.batch)
    for b in blocks:
        print(f"\\begin{{equation}}\n{b.equation.tex}\n\\end{{equation}}" if b.equation else f"{b.text}\n")
    return 0


def cmd_code(args) -> int:
    from codegen.render import module_source
    from derive.engine import derive
    from derive.registry import get
    print(module_source(derive(get(args.op))), end="")
    return 0


def cmd_check(args) -> int:
    import numpy as np

    from codegen.render import module_source
    from derive import check
    from derive.engine import derive
    from derive.registry import get, registry
    names = args.ops or list(registry())
    ops = [get(n) for n in names]
    failed = False
    print(f"{'op':24} {'symbolic':10} {'fd max rel err':>15}  check")
    for op in ops:
        d = derive(op)
        wrong = check.brute_force(d, check.example_sizes(op, small=True))
        module = check.load(op.name, module_source(d))
        fd = check.finite_differences(op, module, check.sample(op, check.example_sizes(op),
                                                                np.random.default_rng(0)), check.hyper_values(op))
        ok = not wrong and fd.passed
        failed |= not ok
        print(f"{op.name:24} {'exact' if not wrong else 'MISMATCH':10} {fd.max_error:15.1e}  {'ok' if ok else 'FAILED'}")
        for line in wrong[:3]:
            print(f"    {line}")
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from benchmarks.timing import quiet_blas
    quiet_blas()  # before NumPy loads OpenBLAS
    from benchmarks.run import run
    from derive.registry import get
    if args.rounds < 3:
        raise UsageError("--rounds must be at least 3")
    if args.plot and args.no_sweep:
        raise UsageError("--plot draws the size sweep: drop --no-sweep")
    ops = [get(name) for name in args.ops] or None
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    met = run(ops, dtypes, args.rounds, sweep=not args.no_sweep, build=not args.no_build, plot=args.plot)
    return 0 if met else 1


def cmd_demo(args) -> int:
    from .demo import run
    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    run(epochs=args.epochs, lr=args.lr, seed=args.seed)
    return 0


COMMANDS = {"list": cmd_list, "build": cmd_build, "latex": cmd_latex, "code": cmd_code,
            "check": cmd_check, "bench": cmd_bench, "demo": cmd_demo}
