"""How an op is written: the vocabulary of forward definitions (the op-definition API).

Built-in ops (``derive/ops``) and a user's own are written with the same names.
"""
