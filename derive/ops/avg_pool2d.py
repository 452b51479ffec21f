"""2-D average pooling: each output pixel is the mean of its kernel_h x kernel_w window of the padded input.

Windows start every ``stride`` pixels (``stride`` defaults to the kernel
size, as in PyTorch) on the input with ``padding`` zeros on each side. A
partial window at the edge is dropped, or with ``ceil_mode`` kept if it
starts inside the image or its left padding. The mean divides by the
window's cells inside the padded image, or with ``count_include_pad=False``
by those inside the image alone.
"""
import sympy as sp

from derive.define import Hyper, Input, Intermediate, Iverson, Op, Option, Tensor, forms, indices, pair, sizes

N, C, IH, IW = sizes("N C IH IW")
(kh, kw), (sh, sw) = pair("kernel", positive=True), pair("stride", positive=True)
ph, pw = pair("padding", nonnegative=True)
n, c, i, j, p, q, h, w = indices("n c i j p q h w")
x = Tensor("x", N, C, IH, IW)


def output_size(size, kernel, stride, padding, ceil_mode):
    """Windows along one axis, as PyTorch counts them: with ``ceil_mode`` a partial last window too, unless
    it would start in the right padding (padding is at most half the kernel, so one fewer suffices)."""
    span = size + 2 * padding - kernel
    if not ceil_mode:
        return sp.floor(span / stride) + 1
    return sp.Min(sp.floor((span + stride - 1) / stride), sp.floor((size + padding - 1) / stride)) + 1


def inside(index, low, high):
    """[low <= index <= high]: the window's cell lies in that stretch of the padded axis."""
    return Iverson(sp.And(index - low >= 0, index - low <= high - low))


def avg_pool2d(ceil_mode, count_include_pad):
    OH, OW = output_size(IH, kh, sh, ph, ceil_mode), output_size(IW, kw, sw, pw, ceil_mode)
    # The padded input, long enough for a partial last window (ceil_mode): zero outside the image.
    HP = IH + 2 * ph + (sp.Max(0, (OH - 1) * sh + kh - IH - 2 * ph) if ceil_mode else 0)
    WP = IW + 2 * pw + (sp.Max(0, (OW - 1) * sw + kw - IW - 2 * pw) if ceil_mode else 0)
    xp = Intermediate("xp", (n, c, h, w), (N, C, HP, WP),
                      inside(h - ph, 0, IH - 1) * inside(w - pw, 0, IW - 1) * x[n, c, h - ph, w - pw])
    # What a window's mean divides by: its cells in the padded image, or in the image alone.
    (top, bottom), (left, right) = ((0, IH + 2 * ph - 1), (0, IW + 2 * pw - 1)) if count_include_pad \
        else ((ph, IH + ph - 1), (pw, IW + pw - 1))
    if count_include_pad and not ceil_mode:
        cells = kh * kw  # every window lies in the padded image
    else:
        cells = Intermediate("cells", (i, j), (OH, OW),
                             sp.Sum(inside(i * sh + p, top, bottom), (p, 0, kh - 1))
                             * sp.Sum(inside(j * sw + q, left, right), (q, 0, kw - 1)))[i, j]
    return Op(
        name="avg_pool2d",
        doc=__doc__,
        doc_zh="平均池化层：每个输出像素是补零后输入的一个核窗口内各值的平均；"
               + ("除数是窗口落在补零后图像内的格数。" if count_include_pad else "除数只数窗口落在原图像内的格数。"),
        inputs=(Input(x),),
        output=Intermediate("y", (n, c, i, j), (N, C, OH, OW),
                            sp.Sum(xp[n, c, i * sh + p, j * sw + q], (q, 0, kw - 1), (p, 0, kh - 1)) / cells),
        hyper=(Hyper((kh, kw), 2, cases=(2, 3, (2, 3)), doc="the window's size, an int or (h, w)",
                     valid="kernel >= 1"),
               Hyper((sh, sw), None, cases=(None, 1, (1, 2)),
                     doc="step between windows, an int or (h, w); None: the kernel",
                     valid="stride >= 1", default_to="kernel"),
               Hyper((ph, pw), 0, cases=(0, 1, (1, 0)), doc="zeros added on each side of the image, an int or (h, w)",
                     valid="0 <= 2 * padding <= kernel")),
        pytorch="F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)",
        test_sizes={N: 2, C: 2, IH: 6, IW: 5},
        small_sizes={N: 1, C: 1, IH: 4, IW: 3},
        bench_sizes={"N": 32, "C": 8, "IH": 32, "IW": 32},
    )


OP = forms(avg_pool2d,
           Option("ceil_mode", (False, True), doc="keep a partial last window (one that starts inside the image "
                                                  "or its left padding), as PyTorch's ceil_mode"),
           Option("count_include_pad", (True, False), doc="divide by the window's cells in the padded image "
                                                          "(False: in the image only)"))
