"""Built-in environments, one module per family."""
