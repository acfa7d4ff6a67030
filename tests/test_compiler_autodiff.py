"""Reverse-mode autodiff of IR programs: the backward program, run by the IR interpreter, must
give the same gradients as torch autograd through the forward program."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

import gdsl.function as fn
from gdsl.compiler.autodiff import vjp
from gdsl.compiler.fusion import plan
from gdsl.compiler.interpret import Structure, evaluate
from gdsl.compiler.ir import Builder
from gdsl.compiler.passes import dce, optimize
from gdsl.compiler.trace import FieldSpec, trace_edge_map, trace_gather_reduce
from strategies import graph_cases

H, D = 2, 3
W = torch.randn(D, 4, dtype=torch.float64)
A = torch.randn(1, D, dtype=torch.float64)


def _msg_mixed(edges):
    x = torch.tanh(edges.src["h"]) * torch.exp(edges.data["w"]) + edges.dst["h"]
    return {"m": F.leaky_relu(x, 0.2) / (1.0 + torch.sigmoid(edges.dst["h"]))}


def _msg_weighted_matmul(edges):  # an edge-space matmul: its weight gradient is summed over edges
    return {"m": torch.relu((edges.src["h"] * edges.data["w"]) @ W)}


def _msg_where(edges):
    a, b = edges.src["h"], edges.dst["h"]
    return {"m": torch.where(a > b, a * b, F.elu(a - b)) ** 2}


def _msg_heads(edges):
    h = edges.src["h"].view(-1, 1, D) * A  # broadcast a captured (1, D) weight over heads
    return {"m": (h * edges.data["w"].unsqueeze(-1)).sum(-1, keepdim=True)}


def _red_mean(nodes):
    return {"o": nodes.mailbox["m"].mean(1)}


def _msg_gat(edges):  # multi-head GAT: logits per head, values per head and feature
    return {"m": edges.src["h"], "e": F.leaky_relu(edges.src["el"] + edges.dst["er"], 0.2)}


def _red_attention(nodes):
    alpha = torch.softmax(nodes.mailbox["e"], 1)
    return {"o": (alpha * nodes.mailbox["m"]).sum(1)}


def _red_attention_scaled(nodes):  # weights scaled, negated, and an extra reduction of them
    alpha = torch.softmax(nodes.mailbox["e"], 1)
    return {"o": (-(alpha * 2.0) * nodes.mailbox["m"] / 3.0).sum(1), "s": alpha.sum(1)}


def _red_logsumexp(nodes):
    return {"o": torch.logsumexp(nodes.mailbox["e"], 1) * nodes.mailbox["m"].sum(1)}


CASES = {
    # name: (message, reduce, {space: {field: feature shape}})
    "copy_u_sum": (fn.copy_u("h", "m"), fn.sum("m", "o"), {"src": {"h": (D,)}}),
    "u_mul_e_sum": (fn.u_mul_e("h", "w", "m"), fn.sum("m", "o"), {"src": {"h": (H, D)}, "edge": {"w": (H, 1)}}),
    "u_add_v_mean": (fn.u_add_v("h", "h", "m"), fn.mean("m", "o"), {"src": {"h": (D,)}, "dst": {"h": (D,)}}),
    "u_dot_v_sum": (fn.u_dot_v("h", "h", "m"), fn.sum("m", "o"), {"src": {"h": (H, D)}, "dst": {"h": (H, D)}}),
    "e_div_u_sum": (fn.e_div_u("w", "h", "m"), fn.sum("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}}),
    "u_mul_e_max": (fn.u_mul_e("h", "w", "m"), fn.max("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}}),
    "u_sub_v_min": (fn.u_sub_v("h", "h", "m"), fn.min("m", "o"), {"src": {"h": (D,)}, "dst": {"h": (D,)}}),
    "mixed_math_mean": (_msg_mixed, _red_mean, {"src": {"h": (D,)}, "dst": {"h": (D,)}, "edge": {"w": (1,)}}),
    "edge_matmul_sum": (_msg_weighted_matmul, fn.sum("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}}),
    "where_pow_sum": (_msg_where, fn.sum("m", "o"), {"src": {"h": (D,)}, "dst": {"h": (D,)}}),
    "heads_sum": (_msg_heads, fn.sum("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}}),
    "gat_softmax_sum": (_msg_gat, _red_attention, {"src": {"h": (H, D), "el": (H, 1)}, "dst": {"er": (H, 1)}}),
    "gat_single_logit": (_msg_gat, _red_attention_scaled, {"src": {"h": (D,), "el": (1,)}, "dst": {"er": (1,)}}),
    "logsumexp": (_msg_gat, _red_logsumexp, {"src": {"h": (H, D), "el": (H, 1)}, "dst": {"er": (H, 1)}}),
}


def _kernel(mfunc, rfunc, shapes):
    schema = {sp: {k: FieldSpec(torch.float64, s) for k, s in fields.items()} for sp, fields in shapes.items()}
    traced = trace_gather_reduce(mfunc, rfunc, schema)
    step = plan(optimize(traced.program)[0])
    return step.kernel, traced.params


def _check_gradients(kernel, params, case, seed):
    gen = torch.Generator().manual_seed(seed)
    structure = Structure(torch.as_tensor(case.src), torch.as_tensor(case.dst), case.num_src, case.num_dst)
    rows = {"src": case.num_src, "dst": case.num_dst, "edge": case.num_edges}
    feats = {sp: {} for sp in rows}
    for inp in kernel.inputs:
        if inp.space in rows:
            # Values away from 0 keep log/div/relu kinks out of the finite comparison.
            feats[inp.space][inp.name] = (torch.rand((rows[inp.space], *inp.shape), generator=gen,
                                                     dtype=torch.float64) + 0.5).requires_grad_()
    params = [p.detach().clone().requires_grad_() for p in params]
    out = evaluate(kernel.program, params, structure, feats)
    seeds = {name: torch.randn(value.shape, generator=gen, dtype=torch.float64)
             for name, value in out.items() if "@" not in name}
    inputs = [t for d in feats.values() for t in d.values()] + params
    torch_grads = torch.autograd.grad(sum((out[n] * s).sum() for n, s in seeds.items()), inputs,
                                      allow_unused=True)
    backward = dce(vjp(kernel.program))
    bfeats = {sp: {k: v.detach() for k, v in d.items()} for sp, d in feats.items()}
    for name, value in out.items():
        space, field = name.split(":", 1)
        if "@" in field:
            bfeats[space][field] = value
        else:
            bfeats[space][f"grad:{field}"] = seeds[name]
            bfeats[space][f"{field}@out"] = value.detach()
    got = evaluate(backward, [p.detach() for p in params], structure, bfeats)
    names = [f"{sp}:grad:{k}" for sp, d in feats.items() for k in d] + \
        [f"param:grad:#{i}" for i in range(len(params))]
    for name, expected in zip(names, torch_grads):
        if expected is None:
            assert name not in got or torch.count_nonzero(got[name]) == 0
            continue
        assert name in got, f"no gradient output {name}"
        torch.testing.assert_close(got[name], expected, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=12, deadline=None)
@given(case=graph_cases(max_nodes=8, max_edges=20, hub=None))
def test_backward_program_matches_torch_autograd(name, case):
    mfunc, rfunc, shapes = CASES[name]
    kernel, params = _kernel(mfunc, rfunc, shapes)
    _check_gradients(kernel, params, case, seed=len(case.src))


def test_gradient_to_source_features_is_a_reduction_into_source_rows():
    kernel, _ = _kernel(fn.u_mul_e("h", "w", "m"), fn.sum("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}})
    backward = dce(vjp(kernel.program))
    grad_h = backward.output("src:grad:h")
    assert grad_h.op == "mailbox_sum" and grad_h.attr("into") == "src"
    assert backward.output("edge:grad:w").space == "edge"


def test_max_backward_reads_the_saved_winners():
    kernel, _ = _kernel(fn.copy_u("h", "m"), fn.max("m", "o"), {"src": {"h": (D,)}})
    backward = dce(vjp(kernel.program))
    fields = {ins.attr("field") for ins in backward.instrs if ins.op == "load_dst"}
    assert "o@arg" in fields and "grad:o" in fields


def test_attention_backward_recomputes_weights_from_the_saved_logsumexp():
    kernel, _ = _kernel(_msg_gat, _red_attention, CASES["gat_softmax_sum"][2])
    assert [i.op for i in kernel.program.instrs].count("mailbox_softmax_sum") == 1
    backward = dce(vjp(kernel.program))
    fields = {ins.attr("field") for ins in backward.instrs if ins.op == "load_dst"}
    assert {"o@lse", "o@out", "grad:o"} <= fields
    ops = {ins.op for ins in backward.instrs}
    assert "mailbox_softmax" not in ops and "mailbox_softmax_sum" not in ops


def test_edge_map_backward():
    schema = {"src": {"h": FieldSpec(torch.float64, (D,))}, "dst": {"h": FieldSpec(torch.float64, (D,))}}
    traced = trace_edge_map(fn.u_dot_v("h", "h", "s"), schema)
    kernel = plan(optimize(traced.program)[0]).kernel

    class Case:
        src, dst, num_src, num_dst = [0, 1, 2, 2], [1, 2, 0, 0], 3, 3
        num_edges = 4
    _check_gradients(kernel, traced.params, Case, seed=3)


def test_edge_handoffs_of_backward_plans():
    """GAT's backward hands its per-edge logit gradient from the out-CSR kernel to the in-CSR
    kernel; u_mul_e's backward has none (its edge gradient is returned, not handed over); a
    forward plan has one kernel and none."""
    from gdsl.compiler.fusion import StepPlan, edge_handoffs
    kernel, _ = _kernel(_msg_gat, _red_attention, CASES["gat_softmax_sum"][2])
    back = plan(optimize(vjp(kernel.program))[0])
    handoffs = edge_handoffs(back)
    assert len(handoffs) == 1 and set(handoffs.values()) == {"dst"}
    (field,) = handoffs
    writer = next(k for k in back.kernels if f"edge:{field}" in dict(k.program.outputs))
    assert field.startswith("$") and writer.rows == "src"
    # another reader over the writer's own CSR, or an epilogue reading it: no handoff
    import dataclasses
    reader = next(k for k in back.kernels if k.rows == "dst")
    other_reader = dataclasses.replace(reader, rows="src")
    assert edge_handoffs(StepPlan(back.node_stage, back.kernels + (other_reader,), back.epilogue)) == {}
    b = Builder()
    x = b.add("load_edge", (), {"field": field}, torch.float64, (1,), "edge")
    assert edge_handoffs(StepPlan(back.node_stage, back.kernels, b.build([("edge:x", x)]))) == {}
    kernel, _ = _kernel(fn.u_mul_e("h", "w", "m"), fn.sum("m", "o"), {"src": {"h": (D,)}, "edge": {"w": (1,)}})
    assert edge_handoffs(plan(optimize(vjp(kernel.program))[0])) == {}
    assert edge_handoffs(plan(kernel.program)) == {}
