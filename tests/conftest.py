"""Test configuration shared by every module.

The DGL-semantics suites (graph API, message passing, UDFs) check the API against independent
oracles; they run on the reference executor, which is what defines those semantics. The compiled
back ends are checked against the reference in test_compiled.py and test_codegen_*.py, where the
number of distinct generated kernels (each compiled once) is kept small.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402

# Without a GPU, generated Triton kernels run on CPU tensors in Triton's interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import gdsl  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Timing belongs in bench/, never in tests: no per-example deadline on a loaded 2-core machine.
settings.register_profile("gdsl", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gdsl")

REFERENCE_MODULES = {"test_message_passing", "test_udf", "test_graph", "test_transform", "test_frame",
                     "test_errors", "test_data", "test_compiler_trace", "test_compiler_passes",
                     "test_compiler_autodiff"}


@pytest.fixture(autouse=True)
def _backend_for_module(request):
    if request.module.__name__.rpartition(".")[2] in REFERENCE_MODULES:
        with gdsl.use_backend("reference"):
            yield
    else:
        yield
