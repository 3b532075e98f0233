# SPDX-License-Identifier: Apache-2.0
# recpipe: PyTorch autograd gradients of the layers recpipe's CPU backward passes implement.
"""Writes, for each CASE, CASE.safetensors into --out: the inputs and weights, the upstream
gradient `dy` (the backward's input), and the gradients autograd computed, named `grad.<input>`.
The C++ program tests/unit/cpu/parity_backward.cpp compares recpipe's backward passes with them.

    /usr/bin/python3 tools/reference_backward.py --out build/backward_ref

A COMPLETE marker is written last; exit code 77 means "torch is not installed" (ctest: skipped).
"""

import argparse
import os
import sys

COMPLETE_MARKER = "COMPLETE"


def _clear_marker(argv):
    # A stale fixture from an earlier run must never let the parity tests pass without torch.
    if "--out" in argv and argv.index("--out") + 1 < len(argv):
        marker = os.path.join(argv[argv.index("--out") + 1], COMPLETE_MARKER)
        if os.path.exists(marker):
            os.remove(marker)


_clear_marker(sys.argv)

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the machine
    print("reference_backward.py: torch is not installed (apt-get install python3-torch)", file=sys.stderr)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import save_safetensors  # noqa: E402  (the hand-written safetensors writer)

ACTIVATIONS = {"none": lambda v: v, "relu": torch.relu, "gelu": F.gelu,
               "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "sigmoid": torch.sigmoid}


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(True)


def backward(out, inputs, extra=None):
    """Runs autograd from `out` with a random upstream gradient; returns the tensors to save."""
    dy = torch.randn_like(out)
    out.backward(dy)
    tensors = {"dy": dy}
    for name, t in inputs.items():
        tensors[name] = t.detach()
        if t.requires_grad:
            tensors["grad." + name] = t.grad
    tensors.update(extra or {})
    return tensors


def linear_case(act):
    x, w, b = leaf(16, 24), leaf(12, 24, scale=0.3), leaf(12, scale=0.5)
    return backward(ACTIVATIONS[act](F.linear(x, w, b)), {"x": x, "weight": w, "bias": b})


def mlp_case():
    widths, acts = [20, 32, 16, 3], ["relu", "gelu", "none"]
    x = leaf(16, widths[0])
    inputs, h = {"x": x}, x
    for i, act in enumerate(acts):
        w, b = leaf(widths[i + 1], widths[i], scale=0.3), leaf(widths[i + 1], scale=0.1)
        inputs[f"layers.{i}.weight"], inputs[f"layers.{i}.bias"] = w, b
        h = ACTIVATIONS[act](F.linear(h, w, b))
    return backward(h, inputs)


def layer_norm_case():
    x, g, b = leaf(16, 48, scale=2.0), leaf(48), leaf(48)
    return backward(F.layer_norm(x, (48,), g, b, 1e-5), {"x": x, "gamma": g, "beta": b})


def softmax_case():
    x = leaf(16, 40, scale=3.0)
    return backward(torch.softmax(x, dim=-1), {"x": x})


def embedding_case(mode, weighted, include_last_offset):
    rows, dim, batch = 50, 8, 24
    lengths = torch.randint(0, 6, (batch,))
    lengths[::5] = 0  # empty bags
    offsets = torch.zeros(batch + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    ids = torch.randint(0, rows, (int(offsets[-1]),), dtype=torch.int64)
    table = leaf(rows, dim)
    psw = leaf(ids.numel()) if weighted else None
    out = F.embedding_bag(ids, table, offsets if include_last_offset else offsets[:-1], mode=mode,
                          per_sample_weights=psw, include_last_offset=include_last_offset)
    inputs = {"weight": table}
    if weighted:
        inputs["per_sample_weights"] = psw
    return backward(out, inputs, {"ids": ids, "offsets": offsets if include_last_offset else offsets[:-1]})


def cross_full_case():
    x0, xl, w, b = leaf(16, 24), leaf(16, 24), leaf(24, 24, scale=0.2), leaf(24, scale=0.1)
    out = x0 * (F.linear(xl, w) + b) + xl
    return backward(out, {"x0": x0, "xl": xl, "weight": w, "bias": b})


def cross_low_rank_case():
    x0, xl, down, up, b = leaf(16, 24), leaf(16, 24), leaf(6, 24, scale=0.3), leaf(24, 6, scale=0.3), leaf(24, scale=0.1)
    out = x0 * (F.linear(F.linear(xl, down), up) + b) + xl
    return backward(out, {"x0": x0, "xl": xl, "down": down, "up": up, "bias": b})


def cross_network_case():
    d = 24
    x0 = leaf(16, d)
    inputs, xl = {"x0": x0}, x0
    for i in range(3):
        b = leaf(d, scale=0.1)
        if i == 1:  # a low-rank layer between two full-rank ones
            down, up = leaf(6, d, scale=0.3), leaf(d, 6, scale=0.3)
            inputs[f"layers.{i}.down"], inputs[f"layers.{i}.up"] = down, up
            u = F.linear(F.linear(xl, down), up) + b
        else:
            w = leaf(d, d, scale=0.2)
            inputs[f"layers.{i}.weight"] = w
            u = F.linear(xl, w) + b
        inputs[f"layers.{i}.bias"] = b
        xl = x0 * u + xl
    return backward(xl, inputs)


def dot_interaction_case(self_interaction):
    batch, f, d = 16, 5, 8
    features = leaf(batch, f * d)
    t = features.view(batch, f, d)
    z = torch.bmm(t, t.transpose(1, 2))
    extra = 1 if self_interaction else 0
    li = [i for i in range(f) for j in range(i + extra)]
    lj = [j for i in range(f) for j in range(i + extra)]
    return backward(z[:, li, lj], {"features": features})


def fm_case():
    batch, f, d = 16, 6, 8
    features = leaf(batch, f * d)
    v = features.view(batch, f, d)
    out = 0.5 * (v.sum(1).pow(2) - v.pow(2).sum(1)).sum(1)
    return backward(out, {"features": features})


def dot_rows_case():
    q, i = leaf(16, 32), leaf(16, 32)
    return backward((q * i).sum(-1), {"query": q, "item": i})


def cases():
    out = {}
    for act in ACTIVATIONS:
        out["linear_" + act] = lambda act=act: linear_case(act)
    out["mlp"] = mlp_case
    out["layer_norm"] = layer_norm_case
    out["softmax"] = softmax_case
    out["embedding_bag_sum"] = lambda: embedding_case("sum", False, False)
    out["embedding_bag_mean"] = lambda: embedding_case("mean", False, True)
    out["embedding_bag_weighted"] = lambda: embedding_case("sum", True, False)
    out["cross_full"] = cross_full_case
    out["cross_low_rank"] = cross_low_rank_case
    out["cross_network"] = cross_network_case
    out["dot_interaction"] = lambda: dot_interaction_case(False)
    out["dot_interaction_self"] = lambda: dot_interaction_case(True)
    out["fm_second_order"] = fm_case
    out["dot_rows"] = dot_rows_case
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    for i, (name, make) in enumerate(cases().items()):
        torch.manual_seed(1000 + i)
        save_safetensors(make(), os.path.join(args.out, name + ".safetensors"))
    with open(os.path.join(args.out, COMPLETE_MARKER), "w") as marker:
        marker.write(torch.__version__ + "\n")
    print(f"reference_backward.py: wrote {len(cases())} cases to {args.out}")


if __name__ == "__main__":
    main()
