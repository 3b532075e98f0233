# SPDX-License-Identifier: Apache-2.0
# recpipe: torch.optim and torch losses on fixed inputs, written as safetensors for the C++ parity test.
"""Parity fixtures for include/recpipe/train/{optimizers,losses}.hpp.

Run with Debian's python (it has python3-torch):

    /usr/bin/python3 tools/reference_optimizers.py --out build/train_ref

For each optimizer case NAME it writes NAME.safetensors holding the initial weights, the gradients
of 20 steps and torch's weights after each step:
  dense cases (two parameters, "weight" [6, 5] and "bias" [5]):
      init.P, grad.T.P, value.T.P          (P in weight/bias, T in 0..19)
  row cases (one table [10, 4], sparse gradients: only the rows of each batch):
      init, rows.T (int64, unique), grad.T [len(rows.T), 4], value.T [10, 4]
and losses.safetensors with inputs, losses and autograd gradients of BCE with logits, softmax
cross-entropy (with and without ignore_index) and sampled softmax (log-Q, accidental hits, extra
negatives). The hyper-parameters of each case are listed in CASES below and repeated in
tests/unit/train/optim_parity.cpp.

Exit code 77 means "torch is not installed": ctest reports the parity tests as skipped.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

COMPLETE_MARKER = "COMPLETE"  # written last; the C++ parity test skips when it is absent


def _clear_marker(argv):
    # A stale fixture from an earlier run must never let parity tests pass without torch.
    if "--out" in argv and argv.index("--out") + 1 < len(argv):
        marker = os.path.join(argv[argv.index("--out") + 1], COMPLETE_MARKER)
        if os.path.exists(marker):
            os.remove(marker)


_clear_marker(sys.argv)

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the machine
    print("reference_optimizers.py: torch is not installed (apt-get install python3-torch)", file=sys.stderr)
    sys.exit(77)

from reference_models import save_safetensors  # noqa: E402  (the hand-written writer)

STEPS = 20

# name: (kind, options) -- the same values are in tests/unit/train/optim_parity.cpp
DENSE_CASES = {
    "sgd": ("sgd", dict(lr=0.1)),
    "sgd_momentum": ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd_nesterov": ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.001)),
    "adagrad": ("adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1, eps=1e-10)),
    "adam": ("adam", dict(lr=0.01)),
    "adam_l2_amsgrad": ("adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True)),
    "adamw": ("adamw", dict(lr=0.01, weight_decay=0.1)),
    "adamw_amsgrad": ("adamw", dict(lr=0.02, betas=(0.85, 0.995), weight_decay=0.02, amsgrad=True)),
}
ROW_CASES = {
    "row_sgd": dict(lr=0.1),
    "rowwise_adagrad": dict(lr=0.1, eps=1e-8, initial_accumulator_value=0.05),
    "adagrad_rows": dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-10),
    "lazy_adam": dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8),
}
TABLE_ROWS, TABLE_DIM = 10, 4


def dense_case(kind, options, gen):
    params = {"weight": torch.randn(6, 5, generator=gen), "bias": torch.randn(5, generator=gen)}
    out = {"init." + k: v.clone() for k, v in params.items()}
    tensors = [torch.nn.Parameter(params["weight"].clone()), torch.nn.Parameter(params["bias"].clone())]
    opt = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam,
           "adamw": torch.optim.AdamW}[kind](tensors, **options)
    for t in range(STEPS):
        for name, p in zip(("weight", "bias"), tensors):
            g = torch.randn(p.shape, generator=gen) * (0.1 if t % 5 == 4 else 1.0)
            p.grad = g.clone()
            out["grad.%d.%s" % (t, name)] = g
        opt.step()
        for name, p in zip(("weight", "bias"), tensors):
            out["value.%d.%s" % (t, name)] = p.detach().clone()
    return out


def row_case(name, options, gen):
    init = torch.randn(TABLE_ROWS, TABLE_DIM, generator=gen)
    out = {"init": init.clone()}
    table = torch.nn.Parameter(init.clone())
    acc = torch.full((TABLE_ROWS,), options.get("initial_accumulator_value", 0.0))  # rowwise Adagrad only
    if name == "row_sgd":
        opt = torch.optim.SGD([table], lr=options["lr"])
    elif name == "adagrad_rows":
        opt = torch.optim.Adagrad([table], **options)
    elif name == "lazy_adam":
        opt = torch.optim.SparseAdam([table], **options)
    for t in range(STEPS):
        # a random subset of the rows (unique, unsorted); step 7 has a batch of one row
        rows = torch.randperm(TABLE_ROWS, generator=gen)[: (1 if t == 7 else 2 + t % 5)]
        g = torch.randn(len(rows), TABLE_DIM, generator=gen)
        out["rows.%d" % t] = rows.clone()
        out["grad.%d" % t] = g.clone()
        if name == "rowwise_adagrad":
            # FBGEMM EXACT_ROWWISE_ADAGRAD (weight_decay_mode NONE): one accumulator per row,
            # acc += mean(g^2); row -= lr / (sqrt(acc) + eps) * g
            with torch.no_grad():
                acc[rows] += (g * g).mean(dim=1)
                multiplier = options["lr"] / (acc[rows].sqrt() + options["eps"])
                table[rows] -= multiplier[:, None] * g
        else:
            table.grad = torch.sparse_coo_tensor(rows[None, :], g, (TABLE_ROWS, TABLE_DIM))
            opt.step()
        out["value.%d" % t] = table.detach().clone()
    return out


def leaf(x):
    return x.clone().requires_grad_(True)


def losses(gen):
    out = {}
    # BCE with logits: hard and soft labels, wide logits, sample weights
    n = 37
    logits = torch.randn(n, generator=gen) * 4
    logits[0], logits[1] = 60.0, -60.0
    labels = (torch.rand(n, generator=gen) > 0.5).float()
    labels[::4] = torch.rand(len(labels[::4]), generator=gen)
    weights = torch.rand(n, generator=gen) * 2
    for tag, w in (("bce", None), ("bce_weighted", weights)):
        x = leaf(logits)
        loss = F.binary_cross_entropy_with_logits(x, labels, weight=w)
        loss.backward()
        out[tag + ".loss"] = loss.detach().reshape(1)
        out[tag + ".grad"] = x.grad
    out["bce.logits"], out["bce.labels"], out["bce.weights"] = logits, labels, weights

    # softmax cross-entropy over a catalog of 50
    rows, classes = 9, 50
    scores = torch.randn(rows, classes, generator=gen) * 3
    targets = torch.randint(0, classes, (rows,), generator=gen)
    padded = targets.clone()
    padded[[2, 5]] = -1
    for tag, t in (("ce", targets), ("ce_ignore", padded)):
        x = leaf(scores)
        loss = F.cross_entropy(x, t, ignore_index=-1)
        loss.backward()
        out[tag + ".loss"] = loss.detach().reshape(1)
        out[tag + ".grad"] = x.grad
        out[tag + ".targets"] = t
    out["ce.logits"] = scores

    # sampled softmax: in-batch negatives, log-Q, accidental hits, temperature, extra negatives
    batch, dim, extra, temperature = 8, 6, 5, 0.5
    q = torch.randn(batch, dim, generator=gen)
    p = torch.randn(batch, dim, generator=gen)
    neg = torch.randn(extra, dim, generator=gen)
    ids = torch.tensor([3, 7, 3, 9, 11, 7, 12, 13])
    neg_ids = torch.tensor([20, 9, 21, 3, 22])
    log_q = torch.log(torch.rand(batch, generator=gen) * 0.1 + 0.001)
    neg_log_q = torch.log(torch.rand(extra, generator=gen) * 0.1 + 0.001)
    for tag, with_extra in (("sampled_inbatch", False), ("sampled", True)):
        qv, pv, nv = leaf(q), leaf(p), leaf(neg)
        cand = torch.cat([pv, nv]) if with_extra else pv
        cand_ids = torch.cat([ids, neg_ids]) if with_extra else ids
        cand_log_q = torch.cat([log_q, neg_log_q]) if with_extra else log_q
        logits_s = qv @ cand.T / temperature - cand_log_q[None, :]
        hits = (cand_ids[None, :] == ids[:, None])
        hits[torch.arange(batch), torch.arange(batch)] = False
        logits_s = logits_s.masked_fill(hits, float("-inf"))
        loss = F.cross_entropy(logits_s, torch.arange(batch))
        loss.backward()
        out[tag + ".loss"] = loss.detach().reshape(1)
        out[tag + ".dq"] = qv.grad
        out[tag + ".dp"] = pv.grad
        if with_extra:
            out[tag + ".dneg"] = nv.grad
    out.update({"sampled.q": q, "sampled.p": p, "sampled.neg": neg, "sampled.ids": ids, "sampled.neg_ids": neg_ids,
                "sampled.log_q": log_q, "sampled.neg_log_q": neg_log_q})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(2026)
    for name, (kind, options) in DENSE_CASES.items():
        save_safetensors(dense_case(kind, options, gen), os.path.join(args.out, name + ".safetensors"))
    for name, options in ROW_CASES.items():
        save_safetensors(row_case(name, options, gen), os.path.join(args.out, name + ".safetensors"))
    save_safetensors(losses(gen), os.path.join(args.out, "losses.safetensors"))
    with open(os.path.join(args.out, COMPLETE_MARKER), "w") as marker:
        marker.write("torch %s\n" % torch.__version__)
    print("reference_optimizers.py: wrote %d cases to %s" % (len(DENSE_CASES) + len(ROW_CASES) + 1, args.out))


if __name__ == "__main__":
    main()
