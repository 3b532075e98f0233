# SPDX-License-Identifier: Apache-2.0
# recpipe training benchmark, the PyTorch side: trains the same DLRM / DCN-v2 as bench/train on the
# same initial weights and the same mini-batches, and reports per-step losses and step times.
"""Usage (run by the C++ benchmark, once per timed block):

    python torch_train.py --weights W.safetensors --data D.safetensors --threads 1 \
        --first-step 0 --steps 20 --out result.json [--state S.pt]
    python torch_train.py --weights W.safetensors --data D.safetensors --serve

--serve (what bench/train/train_step.cpp uses) loads once, prints one JSON line {"ready": ...,
"torch": version} on stdout, then answers each stdin line `run FIRST STEPS THREADS` with one JSON
line (losses, step_seconds, step_cpu_seconds (process CPU time: what the step costs with
preemption on a shared machine left out), and per-phase seconds: forward+loss, backward, dense optimizer, table
optimizer) and exits on `quit` or end of input. Module and optimizer state stay in the process
between blocks, so blocks interleaved with another side's train exactly as one run would, without
saving 2 GB of tables and accumulators between them.

W holds the model's state_dict (names as tools/reference_models.py, config in the metadata);
D holds `dense` [N, dense_dim] F32, `labels` [N] F32 and `ids.<t>` [N] I64 (one id per example and
table). Step s trains on batch (s mod N/batch), rows [lo, lo + batch): the C++ side uses the same rule.
With --state the module and optimizer state are loaded from / saved to S between blocks, so a
run split into timed blocks trains exactly as one run would. Only the steps are timed: imports,
file reads and state saving are not.

Optimizers: Adam(lr 1e-3) for dense weights; tables: Adagrad(lr 0.05) on sparse gradients
(`nn.EmbeddingBag(sparse=True)`, element-wise accumulators: what a PyTorch user without FBGEMM
runs) -- the same update rules recpipe's `adam` and `adagrad_rows` implement, so the loss curves can
be compared step by step.
"""
import argparse
import json
import os
import struct
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import reference_models as ref  # noqa: E402  (the reference DLRM / DCNv2 modules)

_NP = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "F16": np.float16}


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
    meta = header.pop("__metadata__", {})
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        arr = np.frombuffer(mm[base + a: base + b], dtype=_NP[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(np.array(arr))
    return out, meta


def main():
    # torch 2.x warns once per process that sparse invariant checks are off (they are, as by default).
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--first-step", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--dense-lr", type=float, default=1e-3)
    p.add_argument("--table-lr", type=float, default=0.05)
    p.add_argument("--state", default="")
    p.add_argument("--out", default="")
    p.add_argument("--serve", action="store_true")
    a = p.parse_args()
    if not a.serve and not a.out:
        p.error("--out is required unless --serve")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    weights, meta = load_safetensors(a.weights)
    cfg = json.loads(meta["recpipe.config"])
    module = ref.build(cfg)
    # Sparse gradients for the tables, as a PyTorch user training large tables would.
    bags = module.emb_l if cfg["model"] == "dlrm" else module.embeddings
    for bag in bags:
        bag.sparse = True
    module.load_state_dict(weights)
    del weights  # the module holds its own copy (2 x 1 GB otherwise)
    table_params = [b.weight for b in bags]
    table_ids = {id(t) for t in table_params}
    dense_params = [q for q in module.parameters() if id(q) not in table_ids]
    dense_opt = torch.optim.Adam(dense_params, lr=a.dense_lr)
    table_opt = torch.optim.Adagrad(table_params, lr=a.table_lr)
    if a.state and os.path.exists(a.state):
        saved = torch.load(a.state)
        module.load_state_dict(saved["module"])
        dense_opt.load_state_dict(saved["dense_opt"])
        table_opt.load_state_dict(saved["table_opt"])

    data, _ = load_safetensors(a.data)
    dense, labels = data["dense"], data["labels"]
    ids = [data["ids.%d" % t] for t in range(len(bags))]
    offsets = torch.arange(0, a.batch + 1, dtype=torch.int64)
    loss_fn = nn.BCEWithLogitsLoss()
    num_batches = dense.shape[0] // a.batch

    def run(first, steps):
        losses, times, cpu_times, phases = [], [], [], []
        for s in range(first, first + steps):
            lo = (s % num_batches) * a.batch
            batch_ids = [t[lo:lo + a.batch] for t in ids]
            cpu_start = time.process_time()
            start = time.perf_counter()
            dense_opt.zero_grad(set_to_none=True)
            table_opt.zero_grad(set_to_none=True)
            out = module(dense[lo:lo + a.batch], batch_ids, [offsets] * len(bags))
            loss = loss_fn(out.view(-1), labels[lo:lo + a.batch])
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            dense_opt.step()
            t3 = time.perf_counter()
            table_opt.step()
            end = time.perf_counter()
            cpu_times.append(time.process_time() - cpu_start)
            times.append(end - start)
            phases.append([t1 - start, t2 - t1, t3 - t2, end - t3])
            losses.append(loss.item())
        return {"torch": torch.__version__, "losses": losses, "step_seconds": times, "step_cpu_seconds": cpu_times,
                "phase_seconds": phases}

    if a.serve:
        print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "mkldnn": torch.backends.mkldnn.is_available(), "mkl": torch.backends.mkl.is_available()}),
              flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            if words[0] != "run" or len(words) != 4:
                print(json.dumps({"error": "expected `run FIRST STEPS THREADS`, got %r" % line.strip()}), flush=True)
                continue
            torch.set_num_threads(int(words[3]))
            print(json.dumps(run(int(words[1]), int(words[2]))), flush=True)
        return

    result = run(a.first_step, a.steps)
    if a.state:
        torch.save({"module": module.state_dict(), "dense_opt": dense_opt.state_dict(),
                    "table_opt": table_opt.state_dict()}, a.state)
    with open(a.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
