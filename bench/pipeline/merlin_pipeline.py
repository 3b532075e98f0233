# SPDX-License-Identifier: Apache-2.0
"""The whole-pipeline benchmark's Merlin Systems peer: the pipeline of whole_pipeline.cpp as a
Merlin Systems 23.8 ensemble, run in-process by Ensemble.transform (merlin.dag's LocalExecutor,
the call Triton's Python model makes per request). Merlin's own operators where they exist:
QueryFaiss (over the same hnswlib graph as every peer, through a faiss-like search shim, so that
recall is equal by construction), FilterCandidates, UnrollFeatures, PredictPyTorch; custom
operators for the in-memory user and item lookups (QueryFeast's feast does not install next to
these pins, see ../shared/peers/merlin-systems.md) and for an exact top 10 (SoftmaxSampling
samples). One user per request (Merlin's limit), timed as sequential calls. Prints `RESULT {json}`.
Run by the C++ benchmark with the virtual environment ./scripts/bench pipeline creates.
"""
import argparse
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np
    import torch
    import hnswlib
    from merlin.dag import BaseOperator, ColumnSelector
    from merlin.schema import ColumnSchema, Schema
    from merlin.table import TensorTable
    from merlin.systems.dag.ensemble import Ensemble
    from merlin.systems.dag.ops.faiss import QueryFaiss
    from merlin.systems.dag.ops.pytorch import PredictPyTorch
    from merlin.systems.dag.ops.session_filter import FilterCandidates
    from merlin.systems.dag.ops.unroll_features import UnrollFeatures
    from python_pipeline import DCNv2, read_safetensors, set_blas_threads
except ImportError as e:
    print("RESULT " + json.dumps({"skipped": "Merlin Systems is not installed (%s)" % e}))
    sys.exit(0)

DIM, RETRIEVE_K, FINAL_K = 64, 500, 10


def schema(*cols):
    return Schema([ColumnSchema(name, dtype=dtype) for name, dtype in cols])


class LookupUser(BaseOperator):
    """In-memory stand-in for QueryFeast: user vector, user features and the seen items."""

    def __init__(self, user_vectors, offsets, values):
        super().__init__()
        self.user_vectors, self.offsets, self.values = user_vectors, offsets, values

    def transform(self, col_selector, table):
        u = int(table["user_id"].values[0])
        row = self.user_vectors[u:u + 1]
        return type(table)({"user_embedding": row, "user_features": row,
                            "history": self.values[self.offsets[u]:self.offsets[u + 1]]})

    def compute_output_schema(self, input_schema, col_selector, prev_output_schema=None):
        return schema(("user_embedding", np.float32), ("user_features", np.float32), ("history", np.int64))


class LookupItems(BaseOperator):
    def __init__(self, item_vectors):
        super().__init__()
        self.item_vectors = item_vectors

    def transform(self, col_selector, table):
        ids = table["filtered_ids"].values.astype(np.int64)
        return type(table)({"item_id": ids, "item_features": self.item_vectors[ids]})

    def compute_output_schema(self, input_schema, col_selector, prev_output_schema=None):
        return schema(("item_id", np.int64), ("item_features", np.float32))


class TopK(BaseOperator):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def transform(self, col_selector, table):
        ids, scores = table["item_id"].values, table["score"].values
        order = np.lexsort((ids, -scores))[:self.k]  # score descending, then id ascending
        return type(table)({"ordered_ids": ids[order]})

    def compute_output_schema(self, input_schema, col_selector, prev_output_schema=None):
        return schema(("ordered_ids", np.int64))


class FaissLikeHnswlib:
    """What QueryFaiss calls: search(queries, k) -> (distances, labels)."""

    def __init__(self, index):
        self.index = index

    def search(self, x, k):
        labels, distances = self.index.knn_query(x, k=k)
        return distances, labels


class QueryHnswlib(QueryFaiss):
    """QueryFaiss (its own transform and schemas) over the benchmark's hnswlib graph."""

    def __init__(self, index_path, items, topk):
        super().__init__(index_path, topk=topk)
        self.items = items

    def load_artifacts(self, artifact_path=None):
        index = hnswlib.Index(space="ip", dim=DIM)
        index.load_index(self.index_path, max_elements=self.items)
        index.set_ef(self.topk)
        index.set_num_threads(1)
        self._index = FaissLikeHnswlib(index)


class Ranker(torch.nn.Module):
    """PredictPyTorch passes a dict of columns: x0 = [unrolled user features | item features]."""

    def __init__(self, dcn):
        super().__init__()
        self.dcn = dcn

    def forward(self, cols):
        return self.dcn(torch.cat([cols["user_features"], cols["item_features"]], 1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--requests", type=int, default=2000)
    a = p.parse_args()
    torch.set_num_threads(1)
    set_blas_threads(1)

    catalog, _ = read_safetensors(os.path.join(a.data, "catalog_%d.safetensors" % a.items))
    weights, meta = read_safetensors(os.path.join(a.data, "dcn_v2.safetensors"))
    dcn = DCNv2(json.loads(meta["recpipe.config"]))
    dcn.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    model = Ranker(dcn).eval().requires_grad_(False)
    item_vectors = np.ascontiguousarray(catalog["item_vectors"])
    user_vectors = np.ascontiguousarray(catalog["user_vectors"])

    user = ["user_id"] >> LookupUser(user_vectors, catalog["history_offsets"], catalog["history_values"])
    retrieve = QueryHnswlib(os.path.join(a.data, "items_%d.hnswlib" % a.items), a.items, RETRIEVE_K)
    candidates = user["user_embedding"] >> retrieve
    filtered = candidates >> FilterCandidates(filter_out=user["history"], input_col="candidate_ids")
    items = filtered >> LookupItems(item_vectors)
    unrolled = items >> UnrollFeatures("item_id", user["user_features"])
    scores = unrolled[["user_features", "item_features"]] >> PredictPyTorch(
        model, schema(("user_features", np.float32), ("item_features", np.float32)), schema(("score", np.float32)))
    top = (items[["item_id"]] + scores) >> TopK(FINAL_K)
    ensemble = Ensemble(top, schema(("user_id", np.int64)))
    retrieve.load_artifacts(None)

    def run(u):
        out = ensemble.transform(TensorTable({"user_id": np.array([u], dtype=np.int64)}))
        return out["ordered_ids"].values

    check = json.load(open(os.path.join(a.data, "check_%d.json" % a.items)))
    top10 = [run(u).tolist() for u in check["users"]]

    requests = min(a.requests, 500)  # Merlin is slow; 500 single-user calls are enough for p99
    for i in range(20):
        run((i * 7919) % a.users)
    lat = []
    t_all = time.perf_counter()
    for i in range(requests):
        t = time.perf_counter()
        run((i * 7919) % a.users)
        lat.append(time.perf_counter() - t)
    qps = requests / (time.perf_counter() - t_all)
    lat_us = np.array(lat) * 1e6
    print("RESULT " + json.dumps({
        "p50_us": float(np.percentile(lat_us, 50)), "p99_us": float(np.percentile(lat_us, 99)), "qps_sequential": qps,
        "notes": {"requests": requests, "mode": "sequential single-user Ensemble.transform (LocalExecutor), 1 torch thread"},
        "top10": top10}))


if __name__ == "__main__":
    main()
