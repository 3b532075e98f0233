# SPDX-License-Identifier: Apache-2.0
# recpipe: reference PyTorch models, random weights, inputs and expected outputs as safetensors.
"""Reference PyTorch modules for recpipe's models, and the parity fixtures.

Run with Debian's python (it has python3-torch):

    /usr/bin/python3 tools/reference_models.py --out build/models_ref [--torchscript] [--models dlrm,mlp]
    /usr/bin/python3 tools/reference_models.py --out build/example --train-example

For each model NAME it writes:
  NAME.safetensors           weights, named as the module's state_dict(), with metadata
                             "recpipe.model" (the model kind) and "recpipe.config" (JSON config)
  NAME.CASE.safetensors      inputs and the outputs PyTorch computed, one file per case
  NAME.pt                    (--torchscript) a TorchScript module of the same weights
  NAME.bench.safetensors     (--torchscript) the benchmark inputs at batch 1 and 256

--train-example trains a tiny DCN-v2 for a few steps on synthetic data, saves it as
dcn_example.safetensors with a few inputs, and prints the scores PyTorch computes for them.

Exit code 77 means "torch is not installed": ctest reports the parity tests as skipped.
"""

import json
import math
import os
import sys
from typing import List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common  # noqa: E402  (marker, torch-or-exit-77, the safetensors writer)

# Also when imported by another script: clears that script's stale marker, exits 77 without torch.
fixture_common.start("reference_models.py")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# Re-exported for scripts that import the writer from here.
from fixture_common import save_safetensors  # noqa: E402,F401


# --------------------------------------------------------------------------------------------
# Reference modules. recpipe's C++ models use exactly these parameter names.

def _act(name):
    return {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU(),
            "gelu_tanh": nn.GELU(approximate="tanh")}[name]


class MLP(nn.Module):
    """Linear layers with `activation` between them and `final_activation` after the last.
    Parameters: layers.{2i}.weight [out, in], layers.{2i}.bias [out]."""

    def __init__(self, input_dim, dims, activation="relu", final_activation="none"):
        super().__init__()
        modules = []
        width = input_dim
        for i, d in enumerate(dims):
            modules.append(nn.Linear(width, d))
            last = i + 1 == len(dims)
            act = final_activation if last else activation
            if act != "none":
                modules.append(_act(act))
            elif not last:
                modules.append(nn.Identity())
            width = d
        self.layers = nn.Sequential(*modules)

    def forward(self, x):
        return self.layers(x)


def mlp_from(cfg):
    return MLP(cfg["input_dim"], cfg["dims"], cfg.get("activation", "relu"), cfg.get("final_activation", "none"))


class Tower(nn.Module):
    """One tower: cat([dense] + embedding bags) -> MLP -> optional L2 normalisation.
    Parameters: embeddings.{t}.weight [rows, dim], mlp.layers.*"""

    def __init__(self, cfg, normalize):
        super().__init__()
        self.embeddings = nn.ModuleList([nn.EmbeddingBag(r, d, mode=cfg["pooling"], include_last_offset=True)
                                         for r, d in cfg["tables"]])
        self.mlp = MLP(cfg["dense_dim"] + sum(d for _, d in cfg["tables"]), cfg["dims"],
                       cfg.get("activation", "relu"), "none")
        self.normalize = normalize
        self.dense_dim = cfg["dense_dim"]

    def forward(self, dense, ids: List[torch.Tensor], offsets: List[torch.Tensor]):
        parts: List[torch.Tensor] = []
        if self.dense_dim > 0:
            parts.append(dense)
        for t, emb in enumerate(self.embeddings):  # enumerate: TorchScript can unroll it
            parts.append(emb(ids[t], offsets[t]))
        out = self.mlp(torch.cat(parts, 1))
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=1, eps=1e-12)
        return out


class TwoTower(nn.Module):
    """score = <user_tower(user inputs), item_tower(item inputs)>."""

    def __init__(self, cfg):
        super().__init__()
        self.user_tower = Tower(cfg["user"], cfg["normalize"])
        self.item_tower = Tower(cfg["item"], cfg["normalize"])

    def forward(self, user_dense, user_ids: List[torch.Tensor], user_offsets: List[torch.Tensor],
                item_dense, item_ids: List[torch.Tensor], item_offsets: List[torch.Tensor]):
        u = self.user_tower(user_dense, user_ids, user_offsets)
        v = self.item_tower(item_dense, item_ids, item_offsets)
        return (u * v).sum(1, keepdim=True)


class DLRM(nn.Module):
    """facebookresearch/dlrm (dlrm_s_pytorch.py) with arch_interaction_op="dot": parameter names
    bot_l.*, emb_l.{t}.weight, top_l.* as in that code, so its checkpoints map directly."""

    def __init__(self, cfg):
        super().__init__()
        self.bot_l = MLP(cfg["dense_dim"], cfg["bottom"], "relu", "relu").layers
        self.emb_l = nn.ModuleList([nn.EmbeddingBag(r, cfg["embedding_dim"], mode="sum", include_last_offset=True)
                                    for r in cfg["table_rows"]])
        self.self_interaction = bool(cfg.get("self_interaction", False))
        f = len(cfg["table_rows"]) + 1
        pairs = f * (f + 1) // 2 if self.self_interaction else f * (f - 1) // 2
        self.top_l = MLP(cfg["embedding_dim"] + pairs, cfg["top"], "relu", cfg.get("final_activation", "sigmoid")).layers
        offset = 1 if self.self_interaction else 0
        self.li = [i for i in range(f) for j in range(i + offset)]
        self.lj = [j for i in range(f) for j in range(i + offset)]

    def forward(self, dense, ids: List[torch.Tensor], offsets: List[torch.Tensor]):
        x = self.bot_l(dense)
        parts: List[torch.Tensor] = [x]
        for t, emb in enumerate(self.emb_l):
            parts.append(emb(ids[t], offsets[t]))
        batch, d = x.shape
        t = torch.cat(parts, dim=1).view((batch, -1, d))
        z = torch.bmm(t, torch.transpose(t, 1, 2))
        zflat = z[:, self.li, self.lj]
        return self.top_l(torch.cat([x, zflat], 1))


class CrossLayer(nn.Module):
    """Full rank: x0 * (W xl + b) + xl with W = weight [d, d]."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d, d))
        self.bias = nn.Parameter(torch.empty(d))
        nn.init.xavier_uniform_(self.weight)
        nn.init.uniform_(self.bias, -0.1, 0.1)

    def forward(self, x0, xl):
        return x0 * F.linear(xl, self.weight, self.bias) + xl


class LowRankCrossLayer(nn.Module):
    """Low rank (TorchRec LowRankCrossNet): x0 * (U (V xl) + b) + xl; down = V [r, d], up = U [d, r]."""

    def __init__(self, d, rank):
        super().__init__()
        self.down = nn.Linear(d, rank, bias=False)
        self.up = nn.Linear(rank, d, bias=False)
        self.bias = nn.Parameter(torch.empty(d))
        nn.init.uniform_(self.bias, -0.1, 0.1)

    def forward(self, x0, xl):
        return x0 * (self.up(self.down(xl)) + self.bias) + xl


class DCNv2(nn.Module):
    """DCN-v2 (Wang et al. 2021): x0 = cat([dense] + embedding bags); structure "stacked"
    (cross -> deep -> head) or "parallel" (cat(cross(x0), deep(x0)) -> head).
    Parameters: embeddings.{t}.weight, cross.{l}.weight/bias or cross.{l}.down.weight/up.weight/bias,
    deep.layers.*, head.weight [1, width], head.bias [1]."""

    def __init__(self, cfg):
        super().__init__()
        self.embeddings = nn.ModuleList([nn.EmbeddingBag(r, d, mode=cfg["pooling"], include_last_offset=True)
                                         for r, d in cfg["tables"]])
        d = cfg["dense_dim"] + sum(dim for _, dim in cfg["tables"])
        rank = cfg.get("rank", 0)
        self.cross = nn.ModuleList([LowRankCrossLayer(d, rank) if rank > 0 else CrossLayer(d)
                                    for _ in range(cfg["cross_layers"])])
        self.deep = MLP(d, cfg["deep"], "relu", "relu")
        self.parallel = cfg["structure"] == "parallel"
        head_in = d + cfg["deep"][-1] if self.parallel else cfg["deep"][-1]
        self.head = nn.Linear(head_in, 1)
        self.sigmoid = bool(cfg.get("sigmoid", True))
        self.dense_dim = cfg["dense_dim"]

    def forward(self, dense, ids: List[torch.Tensor], offsets: List[torch.Tensor]):
        parts: List[torch.Tensor] = []
        if self.dense_dim > 0:
            parts.append(dense)
        for t, emb in enumerate(self.embeddings):  # enumerate: TorchScript can unroll it
            parts.append(emb(ids[t], offsets[t]))
        x0 = torch.cat(parts, 1)
        xl = x0
        for layer in self.cross:
            xl = layer(x0, xl)
        if self.parallel:
            h = torch.cat([xl, self.deep(x0)], 1)
        else:
            h = self.deep(xl)
        out = self.head(h)
        return torch.sigmoid(out) if self.sigmoid else out


class SessionTransformer(nn.Module):
    """SASRec / Transformers4Rec style: item_embedding(ids) * embedding_scale + position_embedding,
    N nn.TransformerEncoderLayer blocks with a causal mask, final LayerNorm; the hidden state at
    each session's last position is the session vector. Sessions are right-padded."""

    def __init__(self, cfg):
        super().__init__()
        e = cfg["embedding_dim"]
        self.item_embedding = nn.Embedding(cfg["num_items"], e)
        self.position_embedding = nn.Embedding(cfg["max_length"], e)
        nn.init.normal_(self.item_embedding.weight, std=cfg.get("init_std", 0.1))
        nn.init.normal_(self.position_embedding.weight, std=cfg.get("init_std", 0.1))
        layer = nn.TransformerEncoderLayer(e, cfg["num_heads"], cfg["ffn_dim"], dropout=0.0,
                                           activation=cfg.get("activation", "relu"), batch_first=True,
                                           norm_first=bool(cfg.get("norm_first", True)), layer_norm_eps=cfg.get("eps", 1e-5))
        self.encoder = nn.TransformerEncoder(layer, cfg["num_layers"], enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(e, eps=cfg.get("eps", 1e-5))
        self.scale = float(cfg.get("embedding_scale", 1.0))
        self.max_length = cfg["max_length"]

    def forward(self, items, lengths):
        # items [B, T] right-padded (padding id 0), lengths [B] >= 1
        batch, t = items.shape
        positions = torch.arange(t, device=items.device).unsqueeze(0).expand(batch, t)
        h = self.item_embedding(items) * self.scale + self.position_embedding(positions)
        causal = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
        padding = torch.arange(t).unsqueeze(0) >= lengths.unsqueeze(1)
        h = self.encoder(h, mask=causal, src_key_padding_mask=padding)
        h = self.final_norm(h)
        return h[torch.arange(batch), lengths - 1]

    def score_all_items(self, encoded):
        return encoded @ self.item_embedding.weight.t()


# --------------------------------------------------------------------------------------------
# Configs (also written to the metadata, where the C++ loader reads them)

CONFIGS = {
    "mlp": {"model": "mlp", "input_dim": 32, "dims": [64, 32, 8], "activation": "relu", "final_activation": "none"},
    "two_tower": {"model": "two_tower", "normalize": True,
                  "user": {"dense_dim": 8, "tables": [[1000, 16], [500, 8]], "pooling": "mean", "dims": [64, 32]},
                  "item": {"dense_dim": 4, "tables": [[2000, 16]], "pooling": "mean", "dims": [64, 32]}},
    "dlrm": {"model": "dlrm", "dense_dim": 13, "embedding_dim": 16, "bottom": [64, 16],
             "table_rows": [1000, 500, 2000, 100, 50, 3000, 700, 20], "top": [64, 32, 1],
             "self_interaction": False, "final_activation": "sigmoid"},
    "dcn_v2": {"model": "dcn_v2", "dense_dim": 13, "tables": [[1000, 8], [500, 8], [2000, 8], [100, 8], [50, 8], [300, 8]],
               "pooling": "sum", "cross_layers": 3, "rank": 0, "deep": [128, 64], "structure": "stacked",
               "sigmoid": True},
    "dcn_v2_parallel_low_rank": {"model": "dcn_v2", "dense_dim": 13, "tables": [[1000, 16], [500, 16], [2000, 16]],
                                 "pooling": "mean", "cross_layers": 2, "rank": 16, "deep": [64, 32],
                                 "structure": "parallel", "sigmoid": False},
    "session_transformer": {"model": "session_transformer", "num_items": 5000, "embedding_dim": 64,
                            "max_length": 200, "num_heads": 2, "ffn_dim": 128, "num_layers": 2,
                            "activation": "relu", "norm_first": True, "embedding_scale": 1.0, "eps": 1e-5},
    "session_transformer_post_norm": {"model": "session_transformer", "num_items": 3000, "embedding_dim": 32,
                                      "max_length": 200, "num_heads": 4, "ffn_dim": 64, "num_layers": 1,
                                      "activation": "gelu", "norm_first": False,
                                      "embedding_scale": math.sqrt(32.0), "eps": 1e-5},
}


def build(cfg):
    kind = cfg["model"]
    if kind == "mlp":
        return mlp_from(cfg)
    if kind == "two_tower":
        return TwoTower(cfg)
    if kind == "dlrm":
        return DLRM(cfg)
    if kind == "dcn_v2":
        return DCNv2(cfg)
    if kind == "session_transformer":
        return SessionTransformer(cfg)
    raise ValueError(kind)


def save_model(name, cfg, module, out):
    weights = {k: v for k, v in module.state_dict().items()}
    save_safetensors(weights, os.path.join(out, name + ".safetensors"),
                     {"recpipe.model": cfg["model"], "recpipe.config": json.dumps(cfg)})


# --------------------------------------------------------------------------------------------
# Inputs

def ragged(gen, rows, batch, max_bag, empty_every=0):
    """Random bags: (ids int64, offsets int64 with batch + 1 entries)."""
    lengths = torch.randint(1, max_bag + 1, (batch,), generator=gen)
    if empty_every:
        lengths[::empty_every] = 0
    offsets = torch.zeros(batch + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    ids = torch.randint(0, rows, (int(offsets[-1]),), generator=gen, dtype=torch.int64)
    return ids, offsets


def sparse_inputs(gen, tables, batch, prefix, empty_every=0):
    ids, offsets, tensors = [], [], {}
    for t, rows in enumerate(tables):
        i, o = ragged(gen, rows, batch, 5, empty_every)
        ids.append(i)
        offsets.append(o)
        tensors[f"{prefix}sparse.{t}.ids"] = i
        tensors[f"{prefix}sparse.{t}.offsets"] = o
    return ids, offsets, tensors


def make_case(cfg, module, batch, gen, lengths=None):
    """Inputs and expected outputs for one case, as a dict of tensors."""
    kind = cfg["model"]
    with torch.no_grad():
        if kind == "mlp":
            x = torch.randn(batch, cfg["input_dim"], generator=gen)
            return {"dense": x, "expected": module(x)}
        if kind in ("dlrm", "dcn_v2"):
            tables = cfg["table_rows"] if kind == "dlrm" else [r for r, _ in cfg["tables"]]
            dense = torch.randn(batch, cfg["dense_dim"], generator=gen)
            ids, offsets, tensors = sparse_inputs(gen, tables, batch, "", empty_every=7 if batch > 1 else 0)
            tensors["dense"] = dense
            tensors["expected"] = module(dense, ids, offsets)
            return tensors
        if kind == "two_tower":
            tensors = {}
            args = []
            for side in ("user", "item"):
                c = cfg[side]
                dense = torch.randn(batch, c["dense_dim"], generator=gen)
                ids, offsets, t = sparse_inputs(gen, [r for r, _ in c["tables"]], batch, side + ".",
                                                empty_every=5 if batch > 1 else 0)
                tensors.update(t)
                tensors[side + ".dense"] = dense
                args += [dense, ids, offsets]
            tensors["expected"] = module(*args)
            tensors["expected_user"] = module.user_tower(*args[:3])
            tensors["expected_item"] = module.item_tower(*args[3:])
            return tensors
        if kind == "session_transformer":
            lengths = torch.tensor(lengths, dtype=torch.int64)
            t = int(lengths.max())
            items = torch.zeros(len(lengths), t, dtype=torch.int64)
            flat = []
            for b, n in enumerate(lengths.tolist()):
                row = torch.randint(1, cfg["num_items"], (n,), generator=gen, dtype=torch.int64)
                items[b, :n] = row
                flat.append(row)
            offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
            offsets[1:] = torch.cumsum(lengths, 0)
            encoded = module(items, lengths)
            return {"offsets": offsets, "items": torch.cat(flat), "expected": encoded,
                    "expected_scores": module.score_all_items(encoded)}
    raise ValueError(kind)


def cases_for(cfg):
    if cfg["model"] == "session_transformer":
        gen = torch.Generator().manual_seed(11)
        mixed = [1, 7, 200] + torch.randint(1, 201, (61,), generator=gen).tolist()
        return [("len1", 1, [1]), ("len7", 1, [7]), ("len200", 1, [200]), ("b64", 64, mixed)]
    return [("b1", 1, None), ("b64", 64, None)]


# --------------------------------------------------------------------------------------------
# TorchScript for the LibTorch benchmark: one forward(...) over plain tensors per model.

class _SparseScript(nn.Module):
    """forward(dense, ids_0, offsets_0, ...) with a fixed feature count, for torch::jit::load."""

    def __init__(self, module, features):
        super().__init__()
        self.module = module
        self.features = features

    def forward(self, dense, ids: List[torch.Tensor], offsets: List[torch.Tensor]):
        return self.module(dense, ids, offsets)


class _TwoTowerScript(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, dense, ids: List[torch.Tensor], offsets: List[torch.Tensor]):
        # benchmark: user tower encoding (the query path served online)
        return self.module.user_tower(dense, ids, offsets)


class _SessionScript(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, items, lengths):
        return self.module(items, lengths)


def save_torchscript(name, cfg, module, out):
    kind = cfg["model"]
    if kind == "mlp":
        scripted = torch.jit.script(module)
    elif kind == "two_tower":
        scripted = torch.jit.script(_TwoTowerScript(module))
    elif kind == "session_transformer":
        scripted = torch.jit.script(_SessionScript(module))
    else:
        scripted = torch.jit.script(_SparseScript(module, 0))
    scripted = torch.jit.freeze(scripted.eval())
    scripted.save(os.path.join(out, name + ".pt"))


# --------------------------------------------------------------------------------------------
# The example: train a tiny DCN-v2 for a few steps, save it, print its scores.

EXAMPLE_CONFIG = {"model": "dcn_v2", "dense_dim": 4, "tables": [[100, 8], [50, 8]], "pooling": "sum",
                  "cross_layers": 2, "rank": 0, "deep": [32, 16], "structure": "stacked", "sigmoid": True}


def train_example(out):
    torch.manual_seed(0)
    cfg = EXAMPLE_CONFIG
    model = DCNv2(cfg)
    gen = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.BCELoss()
    for step in range(50):
        dense = torch.randn(128, 4, generator=gen)
        ids, offsets, _ = sparse_inputs(gen, [100, 50], 128, "")
        # synthetic click: dense feature 0 plus whether the first id of table 0 is even
        label = ((dense[:, 0] + (ids[0][offsets[0][:-1]] % 2 == 0).float() - 0.5) > 0).float().unsqueeze(1)
        loss = loss_fn(model(dense, ids, offsets), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == 49:
            print(f"step {step:2d} loss {loss.item():.4f}")
    model.eval()
    save_model("dcn_example", cfg, model, out)
    # One request as a pipeline sees it: a user, 5 candidate items, each item's 4 dense features.
    # Sparse feature 0 is the candidate's item id, feature 1 the user id (one id per bag).
    gen = torch.Generator().manual_seed(2)
    item_features = torch.randn(100, 4, generator=gen)
    candidates = torch.tensor([17, 3, 88, 42, 60], dtype=torch.int64)
    user = torch.tensor([7], dtype=torch.int64)
    one_per_bag = torch.arange(len(candidates) + 1, dtype=torch.int64)
    with torch.no_grad():
        scores = model(item_features[candidates], [candidates, user.repeat(len(candidates))], [one_per_bag, one_per_bag])
    save_safetensors({"item_features": item_features, "candidates": candidates, "user_id": user, "expected": scores},
                     os.path.join(out, "dcn_example.inputs.safetensors"))
    fixture_common.write_marker(out)
    print("pytorch scores:", " ".join(f"{v:.6f}" for v in scores.flatten().tolist()))


def main():
    parser = fixture_common.argument_parser(__doc__)
    parser.add_argument("--models", default=",".join(CONFIGS), help="comma-separated subset of: " + ",".join(CONFIGS))
    parser.add_argument("--torchscript", action="store_true", help="also save TorchScript modules and bench inputs")
    parser.add_argument("--train-example", action="store_true", help="train and save the DCN-v2 example instead")
    args = parser.parse_args()
    fixture_common.begin_output(args.out)
    if args.train_example:
        train_example(args.out)
        return
    for name in args.models.split(","):
        if name not in CONFIGS:
            parser.error(f"unknown model {name!r}")
        cfg = CONFIGS[name]
        torch.manual_seed(1234)
        module = build(cfg).eval()
        if cfg["model"] == "session_transformer":
            # default init leaves the attention projections small; keep it, but give the biases values
            with torch.no_grad():
                for pname, p in module.named_parameters():
                    if pname.endswith("bias"):
                        p.uniform_(-0.1, 0.1)
        save_model(name, cfg, module, args.out)
        gen = torch.Generator().manual_seed(42)
        for case, batch, lengths in cases_for(cfg):
            tensors = make_case(cfg, module, batch, gen, lengths)
            save_safetensors(tensors, os.path.join(args.out, f"{name}.{case}.safetensors"))
        if args.torchscript:
            save_torchscript(name, cfg, module, args.out)
            bench = {}
            for batch in (1, 256):
                lengths = torch.randint(20, 51, (batch,), generator=gen).tolist()
                for k, v in make_case(cfg, module, batch, gen, lengths).items():
                    bench[f"b{batch}.{k}"] = v
            save_safetensors(bench, os.path.join(args.out, f"{name}.bench.safetensors"))
    fixture_common.write_marker(args.out)
    print(f"reference_models.py: wrote {args.models} to {args.out}")


if __name__ == "__main__":
    main()
