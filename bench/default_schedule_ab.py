"""Before/after timing of numba's untuned schedule (issue 5's "CPU defaults not slower" check).

    git worktree add /tmp/gdsl_before <commit before issue 5's schedules>
    python bench/default_schedule_ab.py --before /tmp/gdsl_before --out bench/results/default-schedule-ab.json

Each measurement is one process importing gdsl from one of the two trees (forward + backward of
one step, median of 7 after two warm-up steps); the trees alternate (before, after, after, before,
...) three times per row, and the median of the three is reported with the load average around it.
"""
import argparse
import json, os, subprocess, sys, statistics
ARGS = argparse.ArgumentParser()
ARGS.add_argument("--before", required=True)
ARGS.add_argument("--out")
OPTS = ARGS.parse_args()
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOTS = {"before": OPTS.before, "after": HERE}
ROW = r'''
import sys, time, statistics, gc
sys.path.insert(0, ROOT)
import torch, numba
torch.set_num_threads(2)
import gdsl, gdsl.function as fn
sys.path.insert(0, HERE)
from bench.common import uniform_graph, power_law_graph
assert gdsl.__file__.startswith(ROOT), gdsl.__file__
make = uniform_graph if GRAPH == "uniform" else power_law_graph
src, dst = make(NODES, EDGES)
gen = torch.Generator().manual_seed(1)
h = torch.randn(NODES, DIM, generator=gen).requires_grad_()
w = torch.rand(EDGES, 1, generator=gen).requires_grad_()
g = gdsl.graph((src, dst), num_nodes=NODES); g.create_formats_()
def step():
    with g.local_scope():
        g.ndata["h"] = h; g.edata["w"] = w
        msg = fn.copy_u("h", "m") if CASE == "copy_u_sum" else fn.u_mul_e("h", "w", "m")
        g.update_all(msg, fn.sum("m", "out"))
        out = g.ndata["out"]
    if BACKWARD:
        torch.autograd.grad(out.sum(), [h, w] if CASE != "copy_u_sum" else [h])
step(); step()
runs = []
for _ in range(REPEATS):
    gc.collect(); t0 = time.perf_counter(); step(); runs.append((time.perf_counter() - t0) * 1000)
print(statistics.median(runs))
'''
def one(root, graph, case, nodes, edges, dim, backward, repeats):
    code = ROW.replace("HERE", repr(ROOTS["after"])).replace("ROOT", repr(root)).replace("GRAPH", repr(graph)).replace("CASE", repr(case)) \
        .replace("NODES", str(nodes)).replace("EDGES", str(edges)).replace("DIM", str(dim)) \
        .replace("BACKWARD", str(backward)).replace("REPEATS", str(repeats))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp")
    if out.returncode:
        raise SystemExit(out.stderr)
    return float(out.stdout.strip().splitlines()[-1])
rows = [("uniform", "copy_u_sum", 100000, 1000000, 64, True), ("power_law", "copy_u_sum", 100000, 1000000, 64, True),
        ("power_law", "u_mul_e_sum", 100000, 1000000, 16, True), ("uniform", "copy_u_sum", 100000, 1000000, 16, False)]
results = []
for row in rows:
    times = {"before": [], "after": []}
    loads = [os.getloadavg()[0]]
    for rep in range(3):
        for name in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            times[name].append(one(ROOTS[name], *row, repeats=7))
    loads.append(os.getloadavg()[0])
    res = {"row": row, "before_ms": round(statistics.median(times["before"]), 2), "after_ms": round(statistics.median(times["after"]), 2),
           "all": times, "load": [round(l, 2) for l in loads]}
    results.append(res)
    print(json.dumps(res), flush=True)
if OPTS.out:
    json.dump(results, open(OPTS.out, "w"), indent=1)
