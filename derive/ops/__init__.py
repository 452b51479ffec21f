"""Built-in ops: one module each, defining ``OP`` by its forward pass alone."""
