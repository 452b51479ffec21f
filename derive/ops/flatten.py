"""Flatten: the axes after the batch's read as one, row-major, as ``torch.flatten(x, 1)``.

Between pooling and a fully connected layer: ``x`` is (N, C, ...), its
trailing axes seen as one of S values (``S = H W`` for an image), and
element ``f = c S + s`` of a sample's row is channel c's value s. The
gradient reads back the same way: ``dx[n, c, s] = g[n, c S + s]``.
"""
import sympy as sp

from derive.define import Input, Intermediate, Iverson, Op, Tensor, indices, sizes

N, C, S = sizes("N C S")
n, c, f = indices("n c f")
x = Tensor("x", N, C, S)

OP = Op(
    name="flatten",
    doc=__doc__,
    doc_zh="展平层：批次之后的各轴按行优先读成一个轴（与 torch.flatten(x, 1) 相同）；梯度按同样的顺序读回。",
    inputs=(Input(x),),
    # f = c S + s: the channel whose run of S values holds f, at its offset s = f - c S.
    output=Intermediate("y", (n, f), (N, C * S),
                        sp.Sum(Iverson(sp.And(f - c * S >= 0, f - c * S <= S - 1)) * x[n, c, f - c * S],
                               (c, 0, C - 1))),
    shape_kind="channels",
    pytorch="torch.flatten(x, 1)",
    test_sizes={N: 2, C: 3, S: 4},
    small_sizes={N: 1, C: 2, S: 2},
    bench_sizes={"N": 32, "C": 16, "S": 16 * 16},
)
