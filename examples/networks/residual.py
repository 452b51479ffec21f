"""A residual block: two fully connected layers with a ReLU between them, and the input added back.

``derive latex --net examples/networks/residual.py`` derives it: the gradient arriving at x is the sum over
the two nodes that read it, the first layer and the skip connection (δ^x = δ^h W^{(h)} + δ^s).
"""
from derive.define import Add, Layer, Net

NET = Net("residual_block", input="x", layers=[
    Layer("h", "linear", "x"),
    Layer("r", "relu", "h"),
    Layer("o", "linear", "r", sizes={"M": "D"}),  # as wide as x, so that the two can be added
    Add("s", "o", "x"),
    Layer("E", "half_sse", "s"),
])
