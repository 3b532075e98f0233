#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An independent pure-Python implementation of the session baselines and the next-item protocol
(most popular, item-kNN, V-SKNN; Recall@k and MRR@k with rank = 1 + items scoring strictly
higher), to cross-check recpipe's io/sessions.hpp, models/session_baselines.hpp and
train/next_item_eval.hpp on a session-rec split such as ../shared/data/yoochoose-rsc15-100k.

    python3 tools/session_baselines_reference.py ../shared/data/yoochoose-rsc15-100k [--max-sessions N]

Prints one line per model: `name recall R mrr M hits H predictions P`. Written from the algorithm descriptions
(GRU4Rec's item-kNN baseline, Ludewig & Jannach 2018's V-SKNN), with recpipe's documented choices:
sessions ordered by start time then session id, items numbered by first appearance, an item is not
its own item-kNN neighbour, V-SKNN recency by the session's last click, ties to the more recent.
No third-party packages. Exits 77 when the folder is missing.
"""
import argparse
import array
import glob
import math
import os
import sys


def read_clicks(path):
    clicks = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        cs, ci, ct = header.index("SessionId"), header.index("ItemId"), header.index("Time")
        for line in f:
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            clicks.append((int(fields[cs]), int(fields[ci]), float(fields[ct])))
    return clicks


def group(clicks):
    """Sessions as (session id, [(item, time)...]) ordered by (start, id); clicks by time, stable."""
    by_session = {}
    for s, i, t in clicks:
        by_session.setdefault(s, []).append((i, t))
    sessions = []
    for s, events in by_session.items():
        events = sorted(events, key=lambda e: e[1])  # stable: file order on ties
        sessions.append((s, events))
    sessions.sort(key=lambda x: (x[1][0][1], x[0]))
    return sessions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--max-sessions", type=int, default=0)
    ap.add_argument("--cutoff", type=int, default=20)
    ap.add_argument("--neighbors", type=int, default=100)
    ap.add_argument("--lmbd", type=float, default=20.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--sample-size", type=int, default=500)
    args = ap.parse_args()
    train_files = glob.glob(os.path.join(args.folder, "*_train_full.txt"))
    test_files = glob.glob(os.path.join(args.folder, "*_test.txt"))
    if len(train_files) != 1 or len(test_files) != 1:
        print(f"no session-rec split in {args.folder}: skipped")
        return 77

    train = group(read_clicks(train_files[0]))
    vocab = {}
    train_items = []  # dense ids per session
    train_end = []
    for _, events in train:
        row = []
        for i, _ in events:
            if i not in vocab:
                vocab[i] = len(vocab)
            row.append(vocab[i])
        train_items.append(row)
        train_end.append(events[-1][1])
    n = len(vocab)
    test = []
    for _, events in group([c for c in read_clicks(test_files[0]) if c[1] in vocab]):
        if len(events) >= 2:
            test.append([vocab[i] for i, _ in events])
    if args.max_sessions:
        test = test[: args.max_sessions]

    # Most popular.
    counts = [0.0] * n
    for row in train_items:
        for i in row:
            counts[i] += 1

    # Item-kNN.
    sets = [sorted(set(row)) for row in train_items]
    sessions_of = [[] for _ in range(n)]
    for s, items in enumerate(sets):
        for i in items:
            sessions_of[i].append(s)
    knn = []
    for i in range(n):
        co = {}
        for s in sessions_of[i]:
            for j in sets[s]:
                co[j] = co.get(j, 0) + 1
        row = []
        for j, c in co.items():
            if j == i:
                continue
            denom = (len(sessions_of[i]) + args.lmbd) ** args.alpha * (len(sessions_of[j]) + args.lmbd) ** (1 - args.alpha)
            row.append((array.array("f", [c / denom])[0], j))  # float32 like recpipe's similarities
        row.sort(key=lambda x: (-x[0], x[1]))
        if args.neighbors:
            row = row[: args.neighbors]
        knn.append(row)

    # V-SKNN: sessions renumbered by their last click (stable), so larger = more recent.
    order = sorted(range(len(sets)), key=lambda s: train_end[s])
    recent_sets = [sets[s] for s in order]
    recent_of = [[] for _ in range(n)]
    for r, items in enumerate(recent_sets):
        for i in items:
            recent_of[i].append(r)
    recent_lookup = [set(x) for x in recent_sets]

    def score_pop(prefix):
        return counts

    def score_knn(prefix):
        scores = [0.0] * n
        for sim, j in knn[prefix[-1]]:
            scores[j] = sim
        return scores

    def score_vsknn(prefix):
        weights = {}
        for p, i in enumerate(prefix):
            weights[i] = (p + 1) / len(prefix)  # linear; the latest position wins
        candidates = set()
        for i in weights:
            candidates.update(recent_of[i])
        candidates = sorted(candidates, reverse=True)
        if args.sample_size:
            candidates = candidates[: args.sample_size]
        sims = [(sum(w for i, w in weights.items() if i in recent_lookup[c]), c) for c in candidates]
        sims.sort(key=lambda x: (-x[0], -x[1]))
        scores = [0.0] * n
        for sim, c in sims[: args.k]:
            for i in recent_sets[c]:
                scores[i] += sim
        return array.array("f", scores)  # float32 like recpipe's scores (sums in double, then rounded)

    for name, fn in (("popularity", score_pop), ("item-kNN", score_knn), ("V-SKNN", score_vsknn)):
        hits = rr = 0.0
        predictions = 0
        for session in test:
            for t in range(1, len(session)):
                scores = fn(session[:t])
                target = scores[session[t]]
                rank = 1 + sum(1 for x in scores if x > target)
                predictions += 1
                if rank <= args.cutoff:
                    hits += 1
                    rr += 1 / rank
        print(f"{name} recall {hits / predictions:.6f} mrr {rr / predictions:.6f} hits {int(hits)} predictions {predictions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
