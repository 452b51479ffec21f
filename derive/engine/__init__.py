"""The engine: a forward definition in, its derivation out (gradients, steps, checks, networks)."""
