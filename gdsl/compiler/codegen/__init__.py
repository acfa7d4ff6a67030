"""Code generators: lower a fused :class:`~gdsl.compiler.fusion.KernelPlan` to source text."""
