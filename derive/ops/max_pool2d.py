"""2-D max pooling: each output pixel is the largest value of its kernel_h x kernel_w window.

Windows start every ``stride`` pixels (``stride`` defaults to the kernel
size, as in PyTorch) on the input with ``padding`` on each side, which never
holds the maximum (PyTorch pads with -inf); a window's values are
``dilation`` pixels apart. A partial window at the edge is dropped, or with
``ceil_mode`` kept if it starts inside the image or its left padding.
The gradient goes to the window's maximum, found by an argmax mask: a
primitive with a stated rule (it is piecewise constant, derivative 0), whose
tie rule is PyTorch's: the first maximum in the window, row by row, gets it.
"""
import sympy as sp

from derive.define import FirstMax, Hyper, Input, Intermediate, Iverson, Op, Option, Tensor, forms, indices, pair, sizes

N, C, IH, IW = sizes("N C IH IW")
(kh, kw), (sh, sw) = pair("kernel", positive=True), pair("stride", positive=True)
(ph, pw), (dh, dw) = pair("padding", nonnegative=True), pair("dilation", positive=True)
n, c, i, j, p, q, u, v, h, w = indices("n c i j p q u v h w")
x = Tensor("x", N, C, IH, IW)


def output_size(size, extent, stride, padding, ceil_mode):
    """Windows along one axis, as PyTorch counts them: with ``ceil_mode`` a partial last window too, unless
    it would start in the right padding (padding is at most half the kernel, so one fewer suffices)."""
    span = size + 2 * padding - extent
    if not ceil_mode:
        return sp.floor(span / stride) + 1
    return sp.Min(sp.floor((span + stride - 1) / stride), sp.floor((size + padding - 1) / stride)) + 1


def inside(index, length):
    """[0 <= index <= length - 1]."""
    return sp.And(index >= 0, index <= length - 1)


def max_pool2d(ceil_mode):
    extent_h, extent_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # a dilated window's span
    OH, OW = output_size(IH, extent_h, sh, ph, ceil_mode), output_size(IW, extent_w, sw, pw, ceil_mode)
    # The padded input, long enough for a partial last window (ceil_mode): zero outside the image.
    HP = IH + 2 * ph + (sp.Max(0, (OH - 1) * sh + extent_h - IH - 2 * ph) if ceil_mode else 0)
    WP = IW + 2 * pw + (sp.Max(0, (OW - 1) * sw + extent_w - IW - 2 * pw) if ceil_mode else 0)
    xp = Intermediate("xp", (n, c, h, w), (N, C, HP, WP),
                      Iverson(inside(h - ph, IH)) * Iverson(inside(w - pw, IW)) * x[n, c, h - ph, w - pw])
    # The maximum among the window's cells inside the image: the padding is no candidate.
    mask = Intermediate("mask", (n, c, i, j, p, q), (N, C, OH, OW, kh, kw),
                        FirstMax(xp[n, c, i * sh + u * dh, j * sw + v * dw], u, v, kh, kw, p, q,
                                 sp.And(inside(i * sh + u * dh - ph, IH), inside(j * sw + v * dw - pw, IW))))
    return Op(
        name="max_pool2d",
        doc=__doc__,
        doc_zh="最大池化层：每个输出像素是其核窗口内（只看原图像内的格子，窗口内取值间隔为膨胀）的最大值；"
               "梯度只传给窗口中第一个最大值（与 PyTorch 相同）。",
        inputs=(Input(x),),
        output=Intermediate("y", (n, c, i, j), (N, C, OH, OW),
                            sp.Sum(mask[n, c, i, j, p, q] * xp[n, c, i * sh + p * dh, j * sw + q * dw],
                                   (q, 0, kw - 1), (p, 0, kh - 1))),
        hyper=(Hyper((kh, kw), 2, cases=(2, 3, (2, 3)), doc="the window's size, an int or (h, w)",
                     valid="kernel >= 1"),
               Hyper((sh, sw), None, cases=(None, 1, (1, 2)),
                     doc="step between windows, an int or (h, w); None: the kernel",
                     valid="stride >= 1", default_to="kernel"),
               Hyper((ph, pw), 0, cases=(0, 1, (1, 0)),
                     doc="cells added on each side of the image, never a maximum; an int or (h, w)",
                     valid="0 <= 2 * padding <= kernel"),
               Hyper((dh, dw), 1, cases=(1, 2, (1, 2)), doc="step between a window's values, an int or (h, w)",
                     valid="dilation >= 1")),
        pytorch="F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)",
        test_sizes={N: 2, C: 2, IH: 6, IW: 5},
        small_sizes={N: 1, C: 1, IH: 4, IW: 3},
        bench_sizes={"N": 32, "C": 8, "IH": 32, "IW": 32},
    )


OP = forms(max_pool2d,
           Option("ceil_mode", (False, True), doc="keep a partial last window (one that starts inside the image "
                                                  "or its left padding), as PyTorch's ceil_mode"))
