"""Two branches joined, and a weight used twice: a node read by two layers, a concatenation, shared weights.

h = W x + b feeds a ReLU branch and a tanh branch, joined along the features; the last layer applies
its weights, then the first layer's weights again (``share``), before the loss. δ^h is the sum over
h's two readers, and the first layer's weights get the sum of two gradients, one per use.
"""
from derive.define import Concat, Layer, Net

NET = Net("branches", input="x", layers=[
    Layer("h", "linear", "x"),
    Layer("a", "relu", "h"),
    Layer("b", "tanh", "h"),
    Concat("c", "a", "b"),
    Layer("o", "linear", "c", sizes={"M": "D"}),    # back to the input's width D
    Layer("p", "linear", "o", share={"W": "h", "b": "h"}),  # h's weights and bias again: D -> M_1
    Layer("E", "softmax_cross_entropy", "p"),
])
