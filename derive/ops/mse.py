"""Mean squared error over all elements."""
import sympy as sp

from derive.define import Input, Intermediate, Op, Option, Tensor, forms, gradient_option, indices, sizes

(S,) = sizes("S")
(i,) = indices("i")
y, t = Tensor("y", S), Tensor("t", S)
REDUCTIONS = ("mean", "sum", "none")


def mse(reduction, t_grad):
    squared = (y[i] - t[i]) ** 2
    output = {"mean": Intermediate("E", (), (), sp.Sum(squared, (i, 0, S - 1)) / S),
              "sum": Intermediate("E", (), (), sp.Sum(squared, (i, 0, S - 1))),
              "none": Intermediate("L", (i,), (S,), squared)}[reduction]
    doc, doc_zh = {"mean": (__doc__, "均方误差：对所有元素取平均的平方误差。"),
                   "sum": ("Squared error summed over all elements (mse with reduction='sum').",
                           "平方误差之和：对所有元素求和（reduction='sum'）。"),
                   "none": ("Squared error of each element, not reduced (mse with reduction='none').",
                            "逐元素的平方误差，不求和也不取平均（reduction='none'）。")}[reduction]
    return Op(
        name="mse",
        doc=doc,
        doc_zh=doc_zh,
        inputs=(Input(y), Input(t, differentiable=t_grad)),
        output=output,
        shape_kind="flat",
        pytorch="F.mse_loss" if reduction == "mean" else f"F.mse_loss(y, t, reduction={reduction!r})",
        bench_sizes={"S": 1024 * 1000},
    )


T_GRAD = gradient_option("t")

OP = forms(mse, Option("reduction", REDUCTIONS, doc="how the losses of the elements are combined"), T_GRAD)
