"""The DSL compiler: trace user functions to an IR, run passes, fuse, generate kernel source.

Pipeline (docs/design.md, section 3): ``trace`` -> ``ir`` -> ``passes`` / ``autodiff`` ->
``codegen.triton`` and ``codegen.numba``. The modules arrive with the compiler work; until then
message passing runs on the reference executor (``gdsl.reference``).
"""
