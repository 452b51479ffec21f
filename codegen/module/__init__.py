"""The NumPy emitter: a derivation lowered to vector IR and printed as a module with forward and backward."""
