"""What is computed: the registry (one entry per column), the four families, the expression engines."""
