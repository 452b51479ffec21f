"""How an op is written: the names a definition uses, built-in or your own.

An op is its forward definition and nothing else (``derive/ops/*.py`` are
written with exactly these names, and so is a file given with ``--ops``)::

    import sympy as sp
    from derive.define import Input, Intermediate, Op, Tensor, indices, sizes

    (S,) = sizes("S")          # sizes are positive integer symbols
    (i,) = indices("i")        # indices are integer symbols
    x = Tensor("x", S)         # an input array and its symbolic shape
    OP = Op(name="mish", doc="Mish: x tanh(softplus(x)).", inputs=(Input(x),),
            output=Intermediate("y", (i,), (S,), x[i] * sp.tanh(sp.log(1 + sp.exp(x[i])))),
            shape_kind="flat")  # elementwise: any shape

The output is an ``Intermediate``: a name, its indices, its shape and its
definition in index notation (``sp.Sum`` over an index's full range,
``sp.exp``, ``sp.log``, ``sp.tanh``, ``sp.erf``, ``sp.Abs``, ``sp.sqrt``,
powers, ``sp.Piecewise`` cases, ``Iverson`` brackets). Name the steps in
between as intermediates too (``net``, ``mu``, ``xhat``); the derivation folds
its results back onto them and names the gradient arriving at each.
``Input(t, differentiable=False, domain=...)`` says which inputs get no
gradient and where an input's values lie (see ``DOMAINS``); ``Hyper`` declares
a keyword-only hyper-parameter with its default (``Hyper(pair("stride", positive=True), 1)``: one
per image axis, ``stride_h`` and ``stride_w``, given as an int or an (h, w) pair). ``Sigmoid``, ``Softplus``,
``Phi`` and ``NormalPdf`` are functions the engine knows by name (it also
recognises them written out with exp, log and erf). A tensor of integers
(``Tensor("idx", N, integer=True)``, domain ``"index"``) may index another:
``W[idx[n], e]`` is an embedding's lookup. An ``Option`` selects between forward
definitions (a loss's ``reduction``, a bias that may be left out): ``forms(define,
Option(...))`` makes one op of the definitions ``define`` returns for each value; an
``Axis`` (softmax's ``dim``) lets the generated code run a row op along any axis, and ``RowAxes``
(layer norm's ``normalized_ndim``) lay a row out on several trailing axes; ``ClassAxis`` lets a loss
over classes take ``z[N, K, d...]``.
"""
from derive.define.functions import NormalPdf, Phi, Sigmoid, Softplus
from derive.define.forms import Axis, ClassAxis, NoForm, Option, RowAxes, forms, gradient_option
from derive.define.network import Add, Concat, Layer, Net
from derive.define.op import DOMAINS, SHAPE_KINDS, Hyper, Input, Op, pair
from derive.define.symbols import FirstMax, Intermediate, Iverson, Tensor, indices, sizes

__all__ = ["Add", "Axis", "ClassAxis", "Concat", "DOMAINS", "SHAPE_KINDS", "FirstMax", "Hyper", "Input",
           "Intermediate", "Iverson", "Layer", "Net", "NoForm", "NormalPdf", "Op", "Option", "Phi", "RowAxes",
           "Sigmoid", "Softplus", "Tensor", "forms", "gradient_option", "indices", "pair", "sizes"]
