# SPDX-License-Identifier: Apache-2.0
"""PyTorch peer of recpipe's session models (issue 10): trains the SAME session transformer as
train::session_transformer_model / train::session_trainer (SASRec-style, pre-norm
nn.TransformerEncoderLayer, ReLU, final LayerNorm, learned positions 0..L-1, tied item embeddings,
full-softmax next-item cross-entropy at every position of each session's last max_length items,
mini-batches of whole sessions, Adam) and a GRU4Rec (Hidasi et al. 2016: session-parallel
mini-batches, one GRU layer, cross-entropy over the catalog) on a session-rec split, and scores
them with the next-item protocol of train::evaluate_next_item: every prefix of every test session,
rank = 1 + number of items scored strictly higher than the target, Recall@20 and MRR@20, test
clicks on items unseen in training dropped, then test sessions shorter than 2 dropped.

Written from the papers (RecBole's trainer does a leave-one-out split inside train_full, not the
standard protocol over the test file, so it cannot give numbers on the same split).

Run with a PyTorch 2.x python (scripts/bench creates build/peers/torch2):
  build/peers/torch2/bin/python bench/session/torch_session.py \
      --data ../shared/data/yoochoose-rsc15-100k --threads 2 --epochs 5 --json out.json
Prints one line per epoch and writes the results (seconds per epoch, metrics, hyperparameters).
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import time


def read_sessions(path):
    """session-rec TSV (SessionId ItemId Time) -> list of (session id, [item ids]) in time order."""
    clicks = {}
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        si, ii, ti = header.index("SessionId"), header.index("ItemId"), header.index("Time")
        for n, line in enumerate(f):
            cols = line.rstrip("\n").split("\t")
            clicks.setdefault(cols[si], []).append((float(cols[ti]), n, cols[ii]))
    out = []
    for sid, cs in clicks.items():
        cs.sort()
        out.append((sid, [c[2] for c in cs]))
    return out


def load(folder, pair):
    names = {"full": ("train_full", "test"), "valid": ("train_tr", "train_valid")}[pair]
    files = {}
    for f in os.listdir(folder):
        for n in names:
            if f.endswith("_" + n + ".txt"):
                files[n] = os.path.join(folder, f)
    train_raw = read_sessions(files[names[0]])
    test_raw = read_sessions(files[names[1]])
    vocab = {}
    # items numbered in order of first appearance in the training file's sessions
    for _, s in train_raw:
        for i in s:
            vocab.setdefault(i, len(vocab))
    train = [[vocab[i] for i in s] for _, s in train_raw]
    test = []
    for _, s in test_raw:
        kept = [vocab[i] for i in s if i in vocab]
        if len(kept) >= 2:
            test.append(kept)
    return train, test, len(vocab)


def evaluate(score_prefixes, sessions, k=20):
    """score_prefixes(list of prefixes) -> [P, N] scores."""
    import torch
    hits = rr = 0.0
    n = 0
    batch = []

    def flush():
        nonlocal hits, rr, n
        if not batch:
            return
        scores = score_prefixes([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch])
        t = scores.gather(1, targets[:, None])
        rank = (scores > t).sum(1) + 1
        hit = rank <= k
        hits += hit.sum().item()
        rr += (hit.float() / rank.float()).sum().item()
        n += len(batch)
        batch.clear()

    for s in sessions:
        for t in range(1, len(s)):
            batch.append((s[:t], s[t]))
            if len(batch) >= 1024:
                flush()
    flush()
    return hits / max(n, 1), rr / max(n, 1), n


def transformer_model(num_items, a):
    import torch
    from torch import nn

    class SessionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.item_embedding = nn.Embedding(num_items, a.dim)
            self.position_embedding = nn.Embedding(a.max_length, a.dim)
            nn.init.normal_(self.item_embedding.weight, std=0.1)
            nn.init.normal_(self.position_embedding.weight, std=0.1)
            layer = nn.TransformerEncoderLayer(a.dim, a.heads, a.ffn, dropout=0.0, activation="relu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, a.layers, enable_nested_tensor=False)
            self.final_norm = nn.LayerNorm(a.dim)

        def forward(self, items, lengths):  # items [B, T] right-padded with 0
            T = items.shape[1]
            x = self.item_embedding(items) + self.position_embedding.weight[:T][None]
            causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            pad = torch.arange(T)[None, :] >= lengths[:, None]
            h = self.encoder(x, mask=causal, src_key_padding_mask=pad)
            return self.final_norm(h)

    return SessionTransformer()


def pad_batch(seqs):
    import torch
    T = max(len(s) for s in seqs)
    items = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        items[b, :len(s)] = torch.tensor(s)
    return items, torch.tensor([len(s) for s in seqs])


def run_transformer(train, test, num_items, a, log):
    import torch
    torch.manual_seed(a.seed)
    model = transformer_model(num_items, a)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    L = a.max_length
    windows = [s[-L:] for s in train if len(s) >= 2]
    rng = random.Random(a.seed)
    epochs = []
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = list(range(len(windows)))
        rng.shuffle(order)
        start = time.perf_counter()
        cpu_start = time.process_time()
        total = 0.0
        positions = 0
        for first in range(0, len(order), a.batch_size):
            seqs = [windows[i] for i in order[first:first + a.batch_size]]
            items, lengths = pad_batch(seqs)
            targets = torch.full_like(items, -1)
            for b, s in enumerate(seqs):
                targets[b, :len(s) - 1] = torch.tensor(s[1:])
            h = model(items, lengths)
            mask = targets >= 0
            logits = h[mask] @ model.item_embedding.weight.T
            loss = torch.nn.functional.cross_entropy(logits, targets[mask])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * int(mask.sum())
            positions += int(mask.sum())
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        epochs.append({"epoch": epoch, "seconds": seconds, "cpu_seconds": cpu, "loss": total / positions,
                       "positions": positions})
        log(f"transformer epoch {epoch}/{a.epochs}  loss {total / positions:.4f}  {seconds:.2f} s (cpu {cpu:.2f} s)")
    model.eval()

    def score(prefixes):
        with torch.no_grad():
            seqs = [p[-L:] for p in prefixes]
            items, lengths = pad_batch(seqs)
            h = model(items, lengths)
            last = h[torch.arange(len(seqs)), lengths - 1]
            return last @ model.item_embedding.weight.T

    start = time.perf_counter()
    recall, mrr, n = evaluate(score, test)
    return {"epochs": epochs, "recall": recall, "mrr": mrr, "predictions": n,
            "eval_seconds": time.perf_counter() - start,
            "hyperparameters": {"embedding_dim": a.dim, "layers": a.layers, "heads": a.heads, "ffn_dim": a.ffn,
                                "max_length": L, "batch_sessions": a.batch_size, "optimizer": "Adam",
                                "lr": a.lr, "loss": "full softmax cross-entropy", "dropout": 0.0,
                                "epochs": a.epochs}}


def run_gru4rec(train, test, num_items, a, log):
    import torch
    from torch import nn
    torch.manual_seed(a.seed)

    class GRU4Rec(nn.Module):
        def __init__(self):
            super().__init__()
            # as train::gru4rec_model: input and output item embeddings U(-0.1, 0.1), scores
            # <h, output_embedding[item]> without a bias, nn.GRU's own init
            self.embedding = nn.Embedding(num_items, a.gru_embedding)
            self.gru = nn.GRU(a.gru_embedding, a.gru_hidden, batch_first=True)
            self.output = nn.Embedding(num_items, a.gru_hidden)
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            nn.init.uniform_(self.output.weight, -0.1, 0.1)

        def out(self, h):
            return h @ self.output.weight.T

    model = GRU4Rec()
    opt = torch.optim.Adam(model.parameters(), lr=a.gru_lr)
    sessions = [s for s in train if len(s) >= 2]
    rng = random.Random(a.seed)
    B = a.gru_batch
    epochs = []
    for epoch in range(1, a.gru_epochs + 1):
        order = list(range(len(sessions)))
        rng.shuffle(order)
        # session-parallel mini-batches: B slots, each walks one session; a finished slot takes
        # the next session and its hidden state is reset (truncated BPTT of one step)
        slots = list(range(min(B, len(order))))
        pos = [0] * len(slots)
        nxt = len(slots)
        h = torch.zeros(1, len(slots), a.gru_hidden)
        start = time.perf_counter()
        cpu_start = time.process_time()
        total = 0.0
        steps = 0
        while slots:
            inp = torch.tensor([sessions[order[s]][p] for s, p in zip(slots, pos)])
            tgt = torch.tensor([sessions[order[s]][p + 1] for s, p in zip(slots, pos)])
            o, h = model.gru(model.embedding(inp)[:, None, :], h.detach())
            logits = model.out(o[:, 0])
            loss = torch.nn.functional.cross_entropy(logits, tgt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(slots)
            steps += len(slots)
            h = h.detach()
            keep = []
            for j in range(len(slots)):
                pos[j] += 1
                if pos[j] + 1 >= len(sessions[order[slots[j]]]):
                    if nxt < len(order):
                        slots[j], pos[j] = nxt, 0
                        nxt += 1
                        h[:, j] = 0
                        keep.append(j)
                else:
                    keep.append(j)
            if len(keep) < len(slots):
                slots = [slots[j] for j in keep]
                pos = [pos[j] for j in keep]
                h = h[:, keep].contiguous()
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        epochs.append({"epoch": epoch, "seconds": seconds, "cpu_seconds": cpu, "loss": total / steps, "positions": steps})
        log(f"gru4rec epoch {epoch}/{a.gru_epochs}  loss {total / steps:.4f}  {seconds:.2f} s (cpu {cpu:.2f} s)")

    def score(prefixes):
        with torch.no_grad():
            items, lengths = pad_batch(prefixes)
            packed = nn.utils.rnn.pack_padded_sequence(model.embedding(items), lengths, batch_first=True,
                                                       enforce_sorted=False)
            _, h = model.gru(packed)
            return model.out(h[0])

    start = time.perf_counter()
    recall, mrr, n = evaluate(score, test)
    return {"epochs": epochs, "recall": recall, "mrr": mrr, "predictions": n,
            "eval_seconds": time.perf_counter() - start,
            "hyperparameters": {"embedding_dim": a.gru_embedding, "hidden": a.gru_hidden, "layers": 1,
                                "batch_sessions": B, "optimizer": "Adam", "lr": a.gru_lr,
                                "loss": "full softmax cross-entropy", "epochs": a.gru_epochs,
                                "mini_batches": "session-parallel, truncated BPTT 1", "output_bias": False}}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=["full", "valid"], default="full")
    p.add_argument("--models", default="transformer,gru4rec")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=128)
    p.add_argument("--max-length", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--gru-epochs", type=int, default=5)
    p.add_argument("--gru-embedding", type=int, default=64)
    p.add_argument("--gru-hidden", type=int, default=100)
    p.add_argument("--gru-batch", type=int, default=32)
    p.add_argument("--gru-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json")
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)

    def log(line):
        print(line, flush=True)

    train, test, n = load(a.data, a.split)
    log(f"torch {torch.__version__}, {a.threads} threads; {len(train)} training sessions, {n} items, "
        f"{len(test)} test sessions")
    result = {"peer": f"PyTorch {torch.__version__}", "threads": a.threads, "split": a.split, "items": n,
              "python": platform.python_version(), "models": {}}
    for m in a.models.split(","):
        if m == "transformer":
            r = run_transformer(train, test, n, a, log)
        elif m == "gru4rec":
            r = run_gru4rec(train, test, n, a, log)
        else:
            sys.exit(f"unknown model {m}")
        r["seconds_per_epoch"] = sum(e["seconds"] for e in r["epochs"]) / len(r["epochs"])
        r["cpu_seconds_per_epoch"] = sum(e["cpu_seconds"] for e in r["epochs"]) / len(r["epochs"])
        log(f"{m}: Recall@20 {r['recall']:.4f}  MRR@20 {r['mrr']:.4f}  ({r['predictions']} predictions)  "
            f"{r['seconds_per_epoch']:.2f} s/epoch")
        result["models"][m] = r
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
