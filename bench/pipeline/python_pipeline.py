# SPDX-License-Identifier: Apache-2.0
"""The whole-pipeline benchmark's Python peer: the same pipeline as bench/pipeline/whole_pipeline.cpp
written with PyTorch and hnswlib the way a Merlin Systems user writes its operators (one class
per operator with a transform over a dict of columns: QueryFeast-like lookups, QueryFaiss-like
ANN search, FilterCandidates, UnrollFeatures, PredictPyTorch, a top-k), over the same catalog,
the same HNSW graph (hnswlib's own file, written by the C++ benchmark) and the same DCN-v2
weights (safetensors). Run by the C++ benchmark; prints `RESULT {json}` last.

Timed: single-user requests at concurrency 1 (1 torch thread: latency and sequential
throughput), and its best configuration: batches of users (vectorised operators, 2 torch
threads, hnswlib with 2 threads), at several batch sizes; the best throughput is reported.
"""
import argparse
import json
import os
import sys
import time

try:
    import numpy as np
    import torch
    import hnswlib
except ImportError as e:  # the C++ side reports the peer as skipped
    print("RESULT " + json.dumps({"skipped": "python peer needs numpy, torch and hnswlib (%s)" % e}))
    sys.exit(0)

DIM, RETRIEVE_K, FINAL_K = 64, 500, 10


def set_blas_threads(n):
    """Debian's torch runs its GEMMs in OpenBLAS, whose own thread count torch.set_num_threads does
    not set: pin it too, so the peer uses the thread count of the case (1 or 2), like recpipe."""
    try:
        import ctypes
        ctypes.CDLL("libblas.so.3").openblas_set_num_threads(n)
    except (OSError, AttributeError):
        pass


def read_safetensors(path):
    """The safetensors format: 8-byte header length, JSON header, raw little-endian tensors."""
    types = {"F32": np.float32, "I64": np.int64, "I32": np.int32}
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    out, meta = {}, header.pop("__metadata__", {})
    for name, t in header.items():
        lo, hi = t["data_offsets"]
        out[name] = np.frombuffer(raw[base + lo:base + hi], dtype=types[t["dtype"]]).reshape(t["shape"])
    return out, meta


class LowRankCross(torch.nn.Module):
    def __init__(self, d, rank):
        super().__init__()
        self.down = torch.nn.Linear(d, rank, bias=False)
        self.up = torch.nn.Linear(rank, d, bias=False)
        self.bias = torch.nn.Parameter(torch.zeros(d))

    def forward(self, x0, xl):
        return x0 * (self.up(self.down(xl)) + self.bias) + xl


class DCNv2(torch.nn.Module):
    """x0 [n, 128] -> 2 low-rank cross layers -> deep 128-64 (ReLU) -> head 1 (a logit)."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg["dense_dim"]
        self.cross = torch.nn.ModuleList([LowRankCross(d, cfg["rank"]) for _ in range(cfg["cross_layers"])])
        layers, width = [], d
        for w in cfg["deep"]:
            layers += [torch.nn.Linear(width, w), torch.nn.ReLU()]
            width = w
        self.deep = torch.nn.Module()
        self.deep.layers = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(width, 1)

    def forward(self, x0):
        xl = x0
        for layer in self.cross:
            xl = layer(x0, xl)
        return self.head(self.deep.layers(xl))


# ---- operators, as a Merlin user writes them: transform(columns) -> columns ----
class QueryUserFeatures:  # QueryFeast over an in-memory store
    def __init__(self, user_vectors, offsets, values):
        self.user_vectors, self.offsets, self.values = user_vectors, offsets, values

    def transform(self, cols):
        users = cols["user_id"]
        cols["user_embedding"] = self.user_vectors[users]
        cols["user_features"] = self.user_vectors[users]
        cols["history"] = [self.values[self.offsets[u]:self.offsets[u + 1]] for u in users]
        return cols


class QueryHnsw:  # QueryFaiss over hnswlib
    def __init__(self, index, k):
        self.index, self.k = index, k

    def transform(self, cols):
        labels, _ = self.index.knn_query(cols["user_embedding"], k=self.k)
        cols["candidates"] = [row.astype(np.int64) for row in labels]
        return cols


class FilterCandidates:
    def transform(self, cols):
        cols["candidates"] = [c[~np.isin(c, h)] for c, h in zip(cols["candidates"], cols["history"])]
        return cols


class QueryItemFeatures:
    def __init__(self, item_features):
        self.item_features = item_features

    def transform(self, cols):
        cols["counts"] = np.array([len(c) for c in cols["candidates"]])
        cols["flat_candidates"] = np.concatenate(cols["candidates"]) if cols["candidates"] else np.zeros(0, np.int64)
        cols["item_features"] = self.item_features[cols["flat_candidates"]]
        return cols


class UnrollFeatures:
    def transform(self, cols):
        cols["candidate_user_features"] = np.repeat(cols["user_features"], cols["counts"], axis=0)
        return cols


class PredictPyTorch:
    def __init__(self, model):
        self.model = model

    def transform(self, cols):
        x0 = torch.from_numpy(np.concatenate([cols["candidate_user_features"], cols["item_features"]], axis=1))
        with torch.no_grad():
            cols["score"] = self.model(x0).numpy()[:, 0]
        return cols


class TopK:
    def __init__(self, k):
        self.k = k

    def transform(self, cols):
        out, start = [], 0
        for c in cols["counts"]:
            ids, scores = cols["flat_candidates"][start:start + c], cols["score"][start:start + c]
            order = np.lexsort((ids, -scores))[:self.k]  # score descending, then id ascending
            out.append(ids[order])
            start += c
        cols["top"] = out
        return cols


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--requests", type=int, default=2000)
    a = p.parse_args()

    catalog, _ = read_safetensors(os.path.join(a.data, "catalog_%d.safetensors" % a.items))
    weights, meta = read_safetensors(os.path.join(a.data, "dcn_v2.safetensors"))
    cfg = json.loads(meta["recpipe.config"])
    model = DCNv2(cfg)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    model.eval()
    item_vectors = np.ascontiguousarray(catalog["item_vectors"])
    user_vectors = np.ascontiguousarray(catalog["user_vectors"])
    index = hnswlib.Index(space="ip", dim=DIM)
    index.load_index(os.path.join(a.data, "items_%d.hnswlib" % a.items), max_elements=a.items)
    index.set_ef(RETRIEVE_K)  # searches with max(ef, k) = 500, as recpipe and the bare searchKnn do

    ops = [QueryUserFeatures(user_vectors, catalog["history_offsets"], catalog["history_values"]),
           QueryHnsw(index, RETRIEVE_K), FilterCandidates(), QueryItemFeatures(item_vectors), UnrollFeatures(),
           PredictPyTorch(model), TopK(FINAL_K)]
    names = ["lookup user", "retrieve (hnswlib)", "filter seen", "lookup items", "unroll", "score (torch)", "top 10"]

    def user_of(i):
        return (i * 7919) % a.users

    def run(users, stage_times=None):
        cols = {"user_id": np.asarray(users, dtype=np.int64)}
        for i, op in enumerate(ops):
            t = time.perf_counter()
            cols = op.transform(cols)
            if stage_times is not None:
                stage_times[i] += time.perf_counter() - t
        return cols["top"]

    # Outputs for the check (our top 10 of the same users, computed by the C++ side).
    check = json.load(open(os.path.join(a.data, "check_%d.json" % a.items)))
    top10 = [run([u])[0].tolist() for u in check["users"]]

    # Concurrency 1: single-user requests, 1 torch thread, hnswlib 1 thread.
    torch.set_num_threads(1)
    set_blas_threads(1)
    index.set_num_threads(1)
    for i in range(50):
        run([user_of(i)])
    lat, stage_times = [], [0.0] * len(ops)
    t_all = time.perf_counter()
    for i in range(a.requests):
        t = time.perf_counter()
        run([user_of(i)], stage_times)
        lat.append(time.perf_counter() - t)
    qps_seq = a.requests / (time.perf_counter() - t_all)
    lat_us = np.array(lat) * 1e6

    # Best configuration: batches of users, 2 threads for torch and hnswlib.
    torch.set_num_threads(2)
    set_blas_threads(2)
    index.set_num_threads(2)
    best = {"qps": 0}
    for batch in (8, 32, 64, 128):
        n = max(batch, (a.requests // batch) * batch)
        run([user_of(i) for i in range(batch)])
        t = time.perf_counter()
        for start in range(0, n, batch):
            run([user_of(i) for i in range(start, start + batch)])
        qps = n / (time.perf_counter() - t)
        if qps > best["qps"]:
            best = {"qps": qps, "batch": batch, "threads": 2}
    # A batch gives the same answers as single requests (the operators are vectorised, not approximate).
    batched = run(check["users"][:64])
    same = sum(set(x.tolist()) == set(y) for x, y in zip(batched, top10[:64]))

    print("RESULT " + json.dumps({
        "p50_us": float(np.percentile(lat_us, 50)), "p99_us": float(np.percentile(lat_us, 99)),
        "qps_sequential": qps_seq, "qps_batched": best["qps"], "best": dict(best, batch_equals_single=same / 64),
        "stages_us": {n: round(t / a.requests * 1e6, 1) for n, t in zip(names, stage_times)},
        "torch": torch.__version__, "top10": top10}))


if __name__ == "__main__":
    main()
