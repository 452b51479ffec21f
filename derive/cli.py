"""The ``derive`` command: list, build, latex, doc, code, check, verify, bench, demo.

Exit codes: 0 success, 1 a check failed, 2 bad usage or bad input (one line
on stderr, never a traceback); ``verify`` also 3: undecided.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from derive.engine import Mismatch


class UsageError(Exception):
    """Bad usage or bad input: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="derive", description="Backpropagation derived by SymPy: LaTeX and checked NumPy code.")
    sub = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    sub.required = True

    files = _Parser(add_help=False)
    files.add_argument("--ops", dest="ops_files", action="append", default=[], metavar="FILE.py",
                       help="ops defined in your own Python file (OP = Op(...) or OPS = [...]); repeatable")
    defined = _Parser(add_help=False, parents=[files])
    defined.add_argument("--def", dest="definitions", action="append", default=[], metavar="DEFINITION",
                         help="an op in one line, e.g. 'y_i = x_i \\tanh(\\ln(1 + e^{x_i}))' (LaTeX or plain, as "
                              "derive verify reads it); repeat for intermediates, the last defines the output")
    defined.add_argument("--name", help="the name of the op --def defines")
    defined.add_argument("--hyper", action="append", default=[], metavar="NAME=VALUE",
                         help="for --def: a scalar hyper-parameter and its default, e.g. beta=1.0; for --chain or "
                              "--net: a layer's, e.g. conv2d.padding=1")
    defined.add_argument("--no-grad", action="append", default=[], metavar="INPUT",
                         help="for --def: an input that gets no gradient (a loss's target)")
    defined.add_argument("--also-output", dest="outputs", action="append", default=[], metavar="NAME",
                         help="for --def: an earlier definition the op also returns (after the last one), "
                              "with its own upstream gradient")
    defined.add_argument("--step-budget", type=float, metavar="SECONDS",
                         help="seconds each derivation step may take before a simplification is given up "
                              "(default 5)")
    inferred = _Parser(add_help=False)
    inferred.add_argument("--symbols", action="store_true",
                          help="for --def: the inputs, sizes and indices inferred from the definitions, and exit")

    sub.add_parser("list", parents=[files], help="the ops (built in, from packages, your own) and their forward "
                                                  "formulas")
    cached = _Parser(add_help=False)
    cached.add_argument("--no-cache", action="store_true",
                        help="derive afresh: neither read nor write the derivation cache")

    p = sub.add_parser("build", parents=[cached, defined, inferred],
                       help="derive every op, write generated/ (or your ops into --out), check each")
    p.add_argument("--out", default=None, help="directory to write (default: the package's generated/; "
                                                "required for --ops and --def)")

    chosen = _Parser(add_help=False)
    chosen.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="the form an option chooses, e.g. reduction=sum or b=None (default: each option's "
                             "PyTorch default); repeatable")

    p = sub.add_parser("latex", parents=[cached, defined, inferred, chosen], help="an op's or a network's derivation as LaTeX")
    p.add_argument("op", nargs="?", help="an op name, or 'article' for the article's network")
    p.add_argument("--chain", help="comma-separated ops, first layer first, e.g. linear,sigmoid,half_sse")
    p.add_argument("--net", metavar="FILE.py", help="a network file (NET = Net(...): named layers and edges)")
    p.add_argument("--lang", default="en", choices=("en", "zh"))
    p.add_argument("--form", default="index", choices=("index", "matrix"))
    p.add_argument("--batch", action="store_true", help="for a chain: keep the batch index (default: one sample)")
    p.add_argument("--unroll", metavar="T", help="a recurrent cell (rnn_cell, gru_cell, lstm_cell) unrolled over T "
                   "steps: backpropagation through time; T a name (symbolic) or a number")

    p = sub.add_parser("doc", parents=[cached, defined, inferred, chosen], help="a complete document (Markdown or LaTeX) for ops, a network, or the article")
    p.add_argument("ops", nargs="*", help="op names, or 'article' for the article's parts 1 and 2")
    p.add_argument("--chain", help="comma-separated ops of a network, first layer first")
    p.add_argument("--net", metavar="FILE.py", help="a network file (NET = Net(...): named layers and edges)")
    p.add_argument("--unroll", metavar="T", help="one recurrent cell unrolled over T steps (a letter or a number)")
    p.add_argument("--lang", default="en", choices=("en", "zh"))
    p.add_argument("--format", choices=("md", "tex"), help="default: from the -o suffix, else md")
    p.add_argument("-o", "--output", help="file to write; an SVG per picture is written beside Markdown "
                                          "(default: print, without pictures)")
    p.add_argument("--sizes", help="for --chain: nodes per layer in the network picture, e.g. 3,2,2")
    p.add_argument("--title", help="the document's title (default: from the ops)")
    p.add_argument("--example", action="store_true",
                   help="for the article or --chain: a worked example, one training step on numbers, as tables")
    p.add_argument("--flavor", choices=("jekyll", "cnblogs"), default="jekyll",
                   help="Markdown for Jekyll (front matter) or for cnblogs (none); default jekyll")

    p = sub.add_parser("code", parents=[cached, defined, inferred], help="an op's generated NumPy module")
    p.add_argument("op", nargs="?", help="an op name (optional when --ops or --def gives one op)")

    p = sub.add_parser("check", parents=[defined, inferred], help="symbolic and finite-difference verification")
    p.add_argument("ops", nargs="*", help="ops to check (default: yours with --ops or --def, else every built-in op)")
    p.add_argument("--chain", help="a chain of ops (image layers, flatten), checked against the unrolled network")
    p.add_argument("--net", metavar="FILE.py", help="a network file, checked against the unrolled network")
    p.add_argument("--unroll", metavar="T", help="a recurrent cell unrolled over T steps, checked against the cell "
                   "copied 1 to 4 times")

    p = sub.add_parser("verify", parents=[cached, defined, chosen], help="check a formula derived by hand against the machine's derivation",
                       epilog="exit codes: 0 EQUIVALENT (the exact difference simplifies to 0, or both sides agree "
                              "within 1e-30 at every point tried, every value computed to 50 digits); 1 NOT "
                              "EQUIVALENT (a counterexample, confirmed at 100 digits); 2 bad input (one line on "
                              "stderr); 3 UNDECIDED (the formula's values could not be computed to 50 digits, or "
                              "within 0.5 s, at any point tried, and no exact proof was found)")
    p.add_argument("items", nargs="*", metavar="OP FORMULA",
                   help="an op name (or 'article') and the formula, LaTeX or plain ('-' reads it from standard "
                        "input); with --chain, the formula alone")
    p.add_argument("--wrt", help="the gradient: an input (W, x, b) or, for a chain, a quantity (delta_j, w_kj)")
    p.add_argument("--chain", help="comma-separated ops, first layer first, e.g. linear,sigmoid,half_sse")
    p.add_argument("--net", metavar="FILE.py", help="a network file (NET = Net(...)); --wrt a node's error term "
                                                     "(dh) or a parameter (W_h)")
    p.add_argument("--symbols", action="store_true", help="list the symbols a formula may use, and exit")
    p.add_argument("--unroll", metavar="T", help="a recurrent cell unrolled over T steps: --wrt a step's arriving "
                   "gradient (g_h), error term (da), input (x), the first state (h) or a weight (W_hh), with time "
                   "indices (h_{t-1,nj}, \\sum_{t=1}^{T}); checked at T = 2 and 3, or at the number of steps given (up to 6)")
    p.add_argument("--syntax", default="auto", choices=("auto", "latex", "plain"))
    p.add_argument("--seed", type=int, default=0, help="seed of the random points")

    p = sub.add_parser("bench", parents=[files], help="time the generated code against PyTorch, HIPS autograd, "
                                                      "hand-written NumPy and a copy of the same bytes (with the "
                                                      "BLAS a user has), and derive build cold and warm")
    p.add_argument("ops", nargs="*", help="ops to benchmark (default: all with bench_sizes)")
    p.add_argument("--dtype", default="both", choices=("float64", "float32", "both"))
    p.add_argument("--rounds", type=int, default=15, help="interleaved repeats per measurement (default 15)")
    p.add_argument("--no-sweep", action="store_true", help="skip the size sweep")
    p.add_argument("--no-build", action="store_true", help="skip timing derive build")
    p.add_argument("--plot", metavar="FILE", help="write the size sweep as an SVG picture")

    p = sub.add_parser("demo", help="train the article's 3-2-2 network (or another) with the generated code")
    p.add_argument("--network", default="article", choices=("article", "bn", "conv", "lstm"),
                   help="article: linear,sigmoid,linear,sigmoid,half_sse; bn: with batch norm and ReLU; "
                        "conv: conv2d,relu,max_pool2d,flatten,linear,softmax_cross_entropy on bars and stripes; "
                        "lstm: lstm_cell unrolled over 12 steps (backpropagation through time), echoing a bit "
                        "3 steps back")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the network's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--net", metavar="FILE.py", help="train a network file's network on a teacher network's data")
    p.add_argument("--sizes", action="append", default=[], metavar="NAME=VALUE",
                   help="with --net: a size of the network (D=3, M_1=8); the others are 4; repeatable")
    return parser


def main(argv=None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args, extra = _parser().parse_known_args(argv)
        args.argv = argv  # for a command that runs itself again in a child process (bench)
        if extra:  # a formula may come after the options, or start with a minus sign
            if args.command != "verify":
                raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
            args.items += extra
        with _derivation_cache(args), _user_ops(args):
            return COMMANDS[args.command](args)
    except Mismatch as error:  # a derivation or generated code that failed its check: never output
        print(f"derive: check failed: {_one_line(error)}", file=sys.stderr)
        return 1
    except (UsageError, ValueError) as error:
        print(f"derive: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``derive bench | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _user_ops(args):
    """The ops of ``--ops`` files and of ``--def``, findable by name for the command (``args.user_ops``)."""
    from derive.define import oneline
    from derive.define.registry import load_file, using
    from derive.engine import budget
    if getattr(args, "step_budget", None) is not None:
        budget.set_step_seconds(args.step_budget)
    found = [op for path in getattr(args, "ops_files", []) for op in load_file(path)]
    hyper = getattr(args, "hyper", [])
    args.layer_hyper = [h for h in hyper if "." in h.partition("=")[0]]  # conv2d.padding=1: a layer's
    if args.layer_hyper and not (getattr(args, "chain", None) or getattr(args, "net", None)):
        raise UsageError("--hyper LAYER.NAME=VALUE is for --chain or --net")
    if hyper:
        args.hyper = [h for h in hyper if h not in args.layer_hyper]
    definitions = getattr(args, "definitions", [])
    if definitions:
        if not args.name:
            raise UsageError("--def: give the op a name with --name")
        found.append(oneline.op_from_definitions(definitions, args.name, args.hyper, args.no_grad,
                                                 outputs=args.outputs))
    elif getattr(args, "name", None) or getattr(args, "hyper", None) or getattr(args, "no_grad", None) \
            or getattr(args, "outputs", None):
        raise UsageError("--name, --hyper, --no-grad and --also-output are for --def")
    args.user_ops = tuple(found)
    return using(found)


def _network(args):
    """The network of ``--net FILE`` or of a ``--chain`` beyond the dense chains' path (image layers,
    flatten, or per-layer ``--hyper``), composed into one op; None for a dense chain or no network."""
    from derive.define.registry import get
    from derive.engine import network
    chain, path = getattr(args, "chain", None), getattr(args, "net", None)
    if chain and path:
        raise UsageError("give --chain or --net, not both")
    hyper = network.layer_hyper(getattr(args, "layer_hyper", []))
    if path:
        return network.file_network(path, hyper)
    if not chain:
        return None
    names = [n.strip() for n in chain.split(",") if n.strip()]
    if not hyper and not network.needs_network([get(n) for n in names]):
        return None
    return network.chain_network(names, hyper)


def _the_op(args, given):
    """The op a command is about: the name given, else the one op of --ops or --def."""
    from derive.define.registry import get
    if given:
        return get(given)
    if len(args.user_ops) == 1:
        return args.user_ops[0]
    if args.user_ops:
        raise UsageError(f"{args.command}: --ops defines {len(args.user_ops)} ops; name one of "
                         f"{', '.join(op.name for op in args.user_ops)}")
    raise UsageError(f"{args.command}: give an op (see 'derive list'), --ops FILE.py or --def")


def _form(args, op):
    """The form of ``op`` that ``--option NAME=VALUE`` chooses (the default form without one)."""
    if not args.option:
        return op
    from derive.define.forms import Axis, Option, RowAxes
    known = {o.name: o for o in op.options if isinstance(o, Option)}
    values = {}
    for text in args.option:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise UsageError(f"--option: expected NAME=VALUE, got {text!r}")
        if any(isinstance(o, Axis) and o.name == name for o in op.options):
            raise UsageError(f"--option: {name} of {op.name} is an axis, not a form: the derivation is the same "
                             f"along every axis (give {name}= to the generated forward)")
        if any(isinstance(o, RowAxes) and o.name == name for o in op.options):
            raise UsageError(f"--option: {name} of {op.name} lays a row out on several axes, not a form: the "
                             f"derivation is the same over the flattened row (give {name}= to the generated forward)")
        if name not in known:
            have = f"its options are {', '.join(known)}" if known else "it has none"
            raise UsageError(f"--option: {op.name} has no option {name!r}; {have}")
        choices = {str(c): c for c in known[name].choices}
        if value not in choices:
            raise UsageError(f"--option: {name}: expected one of {', '.join(choices)}, got {value!r}")
        values[name] = choices[value]
    return op.form(**values)


def _symbols(args) -> bool:
    """``--symbols``: print what was inferred from --def (or an op's signature) instead of running."""
    if not getattr(args, "symbols", False):
        return False
    from derive.define.oneline import symbols
    if not args.user_ops:
        raise UsageError("--symbols (here) is for --def or --ops: it lists what the tool inferred")
    print("\n\n".join(symbols(op) for op in args.user_ops))
    return True


def _derivation_cache(args):
    """The on-disk derivation cache for commands that print derivations (``check`` always derives afresh)."""
    from derive.engine.cache import DerivationCache, using
    wanted = hasattr(args, "no_cache") and not args.no_cache
    return using(DerivationCache() if wanted else None)


def _one_line(error) -> str:
    return " ".join(str(error).split())


def cmd_list(args) -> int:
    from codegen.text import text
    from derive.define.registry import available
    for name, op in available().items():
        node = op.output
        index = f"[{', '.join(map(str, node.index))}]" if node.index else ""
        where = "" if op.is_builtin else f"    (from {op.origin})"
        print(f"{name:24} {node.name}{index} = {text(node.definition)}{where}")
    return 0


def cmd_build(args) -> int:
    from pathlib import Path

    from codegen.build import GENERATED, build, build_ops
    from derive.engine.cache import active
    if _symbols(args):
        return 0
    start = time.perf_counter()
    if args.user_ops:
        if not args.out:
            raise UsageError("build: --ops and --def write into --out DIR; the package's generated/ holds the "
                             "built-in ops only")
        if Path(args.out).resolve() == GENERATED.resolve():
            raise UsageError("build: --out must not be the package's generated/, which holds the built-in ops only")
        rows = build_ops(args.user_ops, Path(args.out))
    else:
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
    from codegen.certify import certified
    from codegen.render import op_latex
    from derive.engine.derivation import derive
    if _symbols(args):
        return 0
    if (args.chain or args.net) and args.op:
        raise UsageError("give an op or --chain, not both")
    if args.unroll is not None:
        return _print_unrolled(args)
    composed = _network(args)
    if composed is not None:
        from codegen.latex.network import network_latex
        from derive.engine.network import derive_network
        print(network_latex(composed, derive_network(composed), args.lang, args.form), end="")
        return 0
    if args.chain or args.op == "article":
        if args.option:
            raise UsageError("--option is for an op, not a chain or the article")
        return _print_chain(args)
    op = _the_op(args, args.op)
    found = certified(op)  # every form checked, and the module that runs them
    print(op_latex(found.derivation if not args.option else derive(_form(args, op)), args.lang, forms=(args.form,)),
          end="")
    return 0


def _steps(text: str):
    """``--unroll``'s number of steps: a name (symbolic, ``T``) or a whole number of at least 1."""
    import re

    import sympy as sp
    if re.fullmatch(r"[A-Za-z]", text):
        return sp.Symbol(text, integer=True, positive=True)
    if re.fullmatch(r"[1-9][0-9]{0,5}", text):
        return sp.Integer(text)
    raise UsageError(f"--unroll: expected the number of steps as a letter (T, symbolic) or a whole number, got {text!r}")


def _print_unrolled(args) -> int:
    from codegen.latex.unroll import unroll_latex
    from derive.engine.unroll import unroll
    if args.chain or args.net or args.option:
        raise UsageError("--unroll takes one recurrent cell (no --chain, --net or --option)")
    steps = _steps(args.unroll)
    print(unroll_latex(unroll(_the_op(args, args.op)), args.lang, steps, args.form), end="")
    return 0


def _print_chain(args) -> int:
    from codegen.document.article import part1, part2
    from codegen.latex.blocks import blocks_latex
    from codegen.latex.chain import chain_blocks
    from derive.engine.chain import chain
    if args.op == "article":
        blocks = part1(args.lang) + part2(args.lang)
    else:
        names = [n.strip() for n in args.chain.split(",") if n.strip()]
        blocks = chain_blocks(chain(names), args.lang, sample=not args.batch)
    print(blocks_latex(blocks), end="")
    return 0


def cmd_doc(args) -> int:
    from pathlib import Path

    from codegen.certify import certified
    from codegen.document import document as doc
    if _symbols(args):
        return 0
    if args.user_ops and not args.ops and not args.chain:
        args.ops = [op.name for op in args.user_ops]
    if (args.chain or args.net) and args.ops:
        raise UsageError("doc: give ops or --chain, not both")
    if "article" in args.ops and len(args.ops) > 1:
        raise UsageError("doc: 'article' stands alone")
    if args.sizes and not args.chain:
        raise UsageError("--sizes is for --chain")
    if args.example and not (args.chain or args.ops == ["article"]):
        raise UsageError("--example is for a network: 'article' or --chain")
    if args.option and (args.chain or args.ops == ["article"]):
        raise UsageError("--option is for ops, not a chain or the article")
    out = Path(args.output) if args.output else None
    fmt = args.format or ("tex" if out and out.suffix == ".tex" else "md")
    composed = None if args.unroll is not None else _network(args)
    if args.unroll is not None:
        from codegen.document.unroll import unrolled_document
        from derive.engine.unroll import unroll
        if len(args.ops) != 1 or args.chain or args.net or args.option or args.example or args.sizes:
            raise UsageError("doc --unroll takes one recurrent cell (no --chain, --net, --option, --example, --sizes)")
        document = unrolled_document(unroll(_the_op(args, args.ops[0])), args.lang, _steps(args.unroll), args.title)
    elif composed is not None:
        if args.example or args.sizes:
            raise UsageError("--example and --sizes are for dense chains (linear and its activations), not yet for "
                             "a network with image layers or a --net file")
        from codegen.document.network import network_document
        from derive.engine.network import derive_network
        document = network_document(composed, derive_network(composed), args.lang, args.title)
    elif args.chain:
        names = [n.strip() for n in args.chain.split(",") if n.strip()]
        document = doc.chain_document(names, args.lang, _sizes(args.sizes), args.title, example=args.example)
    elif args.ops == ["article"]:
        document = doc.article_document(args.lang, example=args.example)
    elif args.ops:
        for name in args.ops:
            certified(_the_op(args, name))  # every gradient checked, and its code, before anything is written
        document = doc.ops_document([_form(args, _the_op(args, name)) for name in args.ops], args.lang, args.title)
    else:
        raise UsageError("doc: give ops (see 'derive list'), 'article', or --chain")
    if args.title and args.ops == ["article"]:
        document.title = args.title
    if fmt == "tex":
        _write(out, document.latex())
        return 0
    _write(out, document.markdown(out.stem if out else None, flavor=args.flavor))
    for figure in document.figures if out else ():
        _write(out.with_name(f"{out.stem}-{figure.name}.svg"), figure.picture.svg())
    if not out and document.figures:
        print("derive: note: pictures are written only with -o FILE.md", file=sys.stderr)
    return 0


def _sizes(text):
    if not text:
        return None
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UsageError(f"--sizes: expected whole numbers separated by commas, got {text!r}") from None
    return sizes


def _write(path, text: str):
    if path is None:
        print(text, end="")
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"-o: cannot write {path}: {error.strerror}") from None


def cmd_code(args) -> int:
    from codegen.certify import certified
    if _symbols(args):
        return 0
    print(certified(_the_op(args, args.op)).source, end="")
    return 0


def cmd_check(args) -> int:
    """Each op derived afresh, then shown right three ways; a row per op, the first failures under it."""
    import numpy as np

    from codegen.render import module_source
    from derive.define.forms import case_count
    from derive.define.registry import get, registry
    from derive.engine import check
    from derive.engine.derivation import derive_unchecked
    if _symbols(args):
        return 0
    if args.chain or args.net:
        return _check_network(args)
    if args.unroll is not None:
        return _check_unrolled(args)
    ops = [get(n) for n in args.ops] or list(args.user_ops) or list(registry().values())
    failed = False
    print(f"{'op':24} {'symbolic':10} {'fd max rel err':>15} {'extremes':9} check")
    for op in ops:
        module = check.load(op.name, module_source(derive_unchecked(op)))
        wrong, fds, extremes = [], [], []
        for form in op.all_forms:  # an op with options: each form, through the one module
            d = derive_unchecked(form)
            cases = case_count(form)
            sizes = check.example_sizes(form, small=True)
            wrong += [w for case in range(cases) for w in check.brute_force(d, sizes, check.hyper_values(form, case))]
            fds += [check.finite_differences(form, module, check.sample(form, check.example_sizes(form),
                                                                       np.random.default_rng(case),
                                                                       hyper=check.hyper_values(form, case)),
                                             check.hyper_values(form, case), seed=case) for case in range(cases)]
            extremes += [f"{np.dtype(t).name}: {line}" for t in (np.float64, np.float32)
                         for line in check.extremes(d, module, t)]
        ok = not wrong and all(fd.passed for fd in fds) and not extremes
        failed |= not ok
        print(f"{op.name:24} {'exact' if not wrong else 'MISMATCH':10} {max(fd.max_error for fd in fds):15.1e} "
              f"{'ok' if not extremes else 'FAILED':9} {'ok' if ok else 'FAILED'}")
        for line in (wrong[:3] + extremes[:3]):
            print(f"    {line}")
    return 1 if failed else 0


def _check_network(args) -> int:
    """``derive check --chain ... | --net FILE``: the network composed, derived afresh and checked against
    the chain rule run element by element on the unrolled network, at its small and its test sizes."""
    from derive.engine import network
    if args.ops:
        raise UsageError("check: give ops or --chain/--net, not both")
    if args.chain and args.net:
        raise UsageError("give --chain or --net, not both")
    hyper = network.layer_hyper(args.layer_hyper)
    if args.net:
        composed = network.file_network(args.net, hyper)
    else:
        composed = network.chain_network([n.strip() for n in args.chain.split(",") if n.strip()], hyper)
    start = time.perf_counter()
    d = network._derive(composed)  # afresh; raises Mismatch at the small sizes
    sizes = composed.sizes_at(composed.op.test_sizes)
    wrong = network.check_network(composed, d, sizes)
    print(f"{'network':40} {'symbolic':10} check")
    print(f"{composed.op.name[:40]:40} {'ok' if not wrong else 'MISMATCH':10} {'ok' if not wrong else 'FAILED'}")
    print(f"    {d.certificate}")
    print(f"    and at {network._sizes_text(sizes)}: " + ("the same" if not wrong else wrong[0]))
    print(f"    {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 1 if wrong else 0


def _check_unrolled(args) -> int:
    """``derive check CELL --unroll T``: the recursion derived afresh (checked at 1, 2 and 3 steps on the way)
    and checked again at 1 to 4 steps, at sizes other than the certificate's."""
    from derive.define.registry import get
    from derive.engine.check import example_sizes
    from derive.engine.unroll import check_unrolled, unroll
    if len(args.ops) != 1 or args.chain or args.net:
        raise UsageError("check --unroll takes one recurrent cell")
    _steps(args.unroll)
    start = time.perf_counter()
    u = unroll(get(args.ops[0]))
    sizes = {s: v + 1 for s, v in example_sizes(u.op).items()}
    wrong = [w for steps in range(1, 5) for w in check_unrolled(u, steps, sizes, seed=steps)]
    print(f"{'cell unrolled':24} {'symbolic':10} check")
    print(f"{u.op.name:24} {'exact' if not wrong else 'MISMATCH':10} {'ok' if not wrong else 'FAILED'}")
    print(f"    {u.certificate}")
    print(f"    and at T = 1 to 4, {', '.join(f'{s}={v}' for s, v in sizes.items())}: "
          + ("the same" if not wrong else wrong[0]))
    print(f"    {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 1 if wrong else 0


def cmd_verify(args) -> int:
    items = [i for i in args.items if i != "--"]
    composed = _network(args)
    if composed is not None and args.unroll is not None:
        raise UsageError("verify --unroll takes one recurrent cell (no --chain, --net or --option)")
    if composed is not None:
        return _verify_network(args, composed, items)
    if args.chain:
        items.insert(0, None)
    if len(items) > 2:
        raise UsageError("verify: give one formula, in quotes")
    if args.user_ops and not args.chain and len(items) == 1 and not args.symbols:
        items.insert(0, _the_op(args, None))  # the formula alone: it is about your op
    elif args.user_ops and not args.chain and not items and args.symbols:
        items.insert(0, _the_op(args, None))
    op, text = (items + [None, None])[:2]
    if args.chain and op is not None:
        raise UsageError("give an op or --chain, not both")
    unrolled = args.unroll is not None
    if unrolled:
        steps = _steps(args.unroll)
        if args.chain or args.option or op in (None, "article"):
            raise UsageError("verify --unroll takes one recurrent cell (no --chain, --net or --option)")
        from derive.verifier.reading import MAX_STEPS
        if steps.is_Integer and steps > MAX_STEPS:
            raise UsageError(f"verify --unroll: T (a letter: checked at T = 2 and 3) or at most {MAX_STEPS} steps, "
                             f"got {steps}")
        unrolled = int(steps) if steps.is_Integer else True
    if op is None and not args.chain:
        raise UsageError("verify: give an op (see 'derive list'), 'article', or --chain")
    family = None  # with --option: the op whose form it chooses
    if args.option:
        if op is None or op == "article":
            raise UsageError("--option is for an op, not a chain or the article")
        family = _the_op(args, op)
        op = _form(args, family)
    if args.symbols:
        if text is not None:
            raise UsageError("--symbols takes no formula")
        from derive.verifier.reading import symbols
        print(symbols(op, args.chain, bool(unrolled)))
        return 0
    if text is None:
        raise UsageError("verify: give the formula to check (or --symbols to see the names it may use)")
    if text == "-":
        text = _read_formula(sys.stdin)
    from derive.verifier.reading import read_formula
    try:  # malformed input, an unknown name or quantity are refused here, before anything is derived
        reading = read_formula(text, op=op, wrt=args.wrt, chain=args.chain, syntax=args.syntax, unroll=unrolled)
        if unrolled:
            from derive.verifier.unrolled import certified_unrolled
            certified_unrolled(reading.source[1])  # the recursion checked before anything is said against it
        elif op is not None and op != "article":
            from codegen.certify import certified
            certified(family or _the_op(args, op))  # the derivation checked before anything is said against it
        from derive.verifier.verification import judge
        verdict = judge(reading, seed=args.seed)
    except (UsageError, ValueError, KeyboardInterrupt):
        raise
    except Exception as error:  # SymPy refusing something the grammar let through: still one line
        raise UsageError(f"cannot check this formula: {type(error).__name__}: {error}") from None
    print(verdict.report())
    return verdict.exit_code


def _verify_network(args, composed, items) -> int:
    """``derive verify --chain ... | --net FILE``: the formula against the network composed into one op
    (``--wrt`` a node's error term, ``dy_3``, or an input, ``W_1``)."""
    from derive.engine.network import derive_network
    from derive.verifier.reading import read_formula, symbols
    from derive.verifier.verification import judge
    if len(items) > 1:
        raise UsageError("verify: with --chain or --net, give the formula alone, in quotes")
    if args.option:
        raise UsageError("--option is for an op, not a network")
    if args.symbols:
        if items:
            raise UsageError("--symbols takes no formula")
        print(symbols(composed.op, None))
        return 0
    if not items:
        raise UsageError("verify: give the formula to check (or --symbols to see the names it may use)")
    text = _read_formula(sys.stdin) if items[0] == "-" else items[0]
    try:
        reading = read_formula(text, op=composed.op, wrt=args.wrt, chain=None, syntax=args.syntax)
        derive_network(composed)  # checked against the unrolled network before anything is said against it
        verdict = judge(reading, seed=args.seed)
    except (UsageError, ValueError, KeyboardInterrupt):
        raise
    except Exception as error:
        raise UsageError(f"cannot check this formula: {type(error).__name__}: {error}") from None
    print(verdict.report())
    return verdict.exit_code


def _read_formula(stream, chunk: int = 1 << 16, most: int = 1 << 26) -> str:
    """Standard input, kept only up to the formula's limit but counted to its end (up to ``most``
    characters), so that a refusal says how long it really was."""
    from derive.verifier import formula as F
    kept, length = [], 0
    while length <= most:
        part = stream.read(chunk)
        if not part:
            break
        if length <= F.MAX_CHARS:
            kept.append(part)
        length += len(part)
    if length > F.MAX_CHARS:
        counted = f"{length} characters" if length <= most else f"over {most} characters"
        raise F.FormulaError(f"too long ({counted} on standard input, at most {F.MAX_CHARS})")
    return "".join(kept)


def cmd_bench(args) -> int:
    if args.rounds < 3:
        raise UsageError("--rounds must be at least 3")
    if args.plot and args.no_sweep:
        raise UsageError("--plot draws the size sweep: drop --no-sweep")
    from benchmarks import blas
    if blas.overridden() and "numpy" in sys.modules:  # its OpenBLAS has read them: time in a fresh process
        return blas.rerun_in_clean_process(args.argv)
    blas.set_aside()  # the kernel a user's machine runs, not the one the environment names
    from benchmarks.timing import quiet_blas
    quiet_blas()  # before NumPy loads OpenBLAS
    from benchmarks.run import run
    from derive.define.registry import get
    ops = [get(name) for name in args.ops] or list(args.user_ops) or None
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    met = run(ops, dtypes, args.rounds, sweep=not args.no_sweep, build=not args.no_build, plot=args.plot)
    return 0 if met else 1


def cmd_demo(args) -> int:
    from .demo import run
    if args.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if args.net:
        from .demo import run_net
        from .engine.network import file_network
        run_net(file_network(args.net, {}), epochs=args.epochs, lr=args.lr, seed=args.seed,
                sizes=_demo_sizes(args.sizes))
        return 0
    if args.sizes:
        raise UsageError("--sizes is for --net")
    run(epochs=args.epochs, lr=args.lr, seed=args.seed, network=args.network)
    return 0


def _demo_sizes(texts) -> dict:
    """``--sizes NAME=VALUE`` as {name: whole number >= 1}, read without evaluating."""
    import re
    found = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name or not re.fullmatch(r"\d+", value) or int(value) < 1:
            raise UsageError(f"--sizes: expected NAME=VALUE with a whole number >= 1 (D=3), got {text!r}")
        found[name] = int(value)
    return found


COMMANDS = {"list": cmd_list, "build": cmd_build, "latex": cmd_latex, "doc": cmd_doc, "code": cmd_code,
            "check": cmd_check, "verify": cmd_verify, "bench": cmd_bench, "demo": cmd_demo}
