# SPDX-License-Identifier: Apache-2.0
# recpipe: reference SASRec modules of two public implementations, converted by convert_sasrec.py.
"""Reference modules that follow the two most used PyTorch SASRec implementations, and the
parity fixtures for tools/convert_sasrec.py + recpipe::models::session_transformer.

Written from the SASRec paper (Kang & McAuley, ICDM 2018) and the structure of the public code
(parameter names, block layout, padding, masks), not copied from it:

  SASRecPyTorch  the SASRec.pytorch port (github.com/pmixer/SASRec.pytorch, model.py): item
                 embedding * sqrt(d), sequences left-padded with item 0 to a window of maxlen, a
                 causal mask and no key-padding mask (padded slots take part in attention),
                 blocks whose attention query alone is layer-normed, Conv1d(k=1) feed-forward
                 with a residual, final LayerNorm, eps 1e-8. Variants of that code's history:
                   "2023":   positions = window slot 1..maxlen, 0 for padding (pos_emb has
                             maxlen + 1 rows, padding_idx 0);
                   "2020":   positions = window slot 0..maxlen-1 for every slot (maxlen rows) and
                             the timeline mask zeroing padded slots after the embedding and after
                             every block;
                   "pre_norm" / "post_norm": the 2024 code's norm_first switch (standard blocks,
                             feed-forward without its own residual), positions as "2023".
  RecBoleSASRec  RecBole's SASRec (recbole/model/sequential_recommender/sasrec.py with its
                 TransformerEncoder from recbole/model/layers.py): item + position embedding
                 (positions 0..L-1), LayerNorm(eps 1e-12) + dropout, post-norm layers of
                 MultiHeadAttention (query/key/value/dense Linear, residual, LayerNorm) and
                 FeedForward (dense_1, GELU, dense_2, residual, LayerNorm), an additive -10000
                 mask combining causal and padding, right-padded sequences, output gathered at
                 item_seq_len - 1.

Run with Debian's python (it has python3-torch):

    /usr/bin/python3 tools/reference_sasrec.py --out build/sasrec_ref

For each model NAME it writes NAME.pth (the state_dict as that implementation saves it; RecBole's
is its checkpoint dict), NAME.safetensors (+ NAME.json) converted by convert_sasrec.py, and
NAME.CASE.safetensors with offsets, items, expected (last-position features) and expected_scores
(features . every item embedding) for the cases len1, short, maxlen, longer (truncated to the last
maxlen items) and batch (all of them and more, in one batch).

Exit code 77 means "torch is not installed": ctest reports the parity tests as skipped.
"""

import math
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_common  # noqa: E402

fixture_common.start("reference_sasrec.py")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import convert_sasrec  # noqa: E402


# --------------------------------------------------------------------------------------------
# SASRec.pytorch

class PointWiseFeedForward(nn.Module):
    """Two Conv1d(d, d, kernel_size=1) with ReLU between them, over (N, C, L)."""

    def __init__(self, d, dropout):
        super().__init__()
        self.conv1 = nn.Conv1d(d, d, kernel_size=1)
        self.dropout1 = nn.Dropout(dropout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(d, d, kernel_size=1)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x):  # x [B, L, d]
        h = self.conv1(x.transpose(1, 2))
        h = self.conv2(self.relu(self.dropout1(h)))
        return self.dropout2(h).transpose(1, 2)


class SASRecPyTorch(nn.Module):
    def __init__(self, num_items, d, heads, blocks, maxlen, variant="2023", dropout=0.2):
        super().__init__()
        self.variant = variant
        self.maxlen = maxlen
        slot_positions_from_1 = variant != "2020"
        self.item_emb = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.pos_emb = (nn.Embedding(maxlen + 1, d, padding_idx=0) if slot_positions_from_1
                        else nn.Embedding(maxlen, d))
        self.emb_dropout = nn.Dropout(dropout)
        self.attention_layernorms = nn.ModuleList([nn.LayerNorm(d, eps=1e-8) for _ in range(blocks)])
        self.attention_layers = nn.ModuleList([nn.MultiheadAttention(d, heads, dropout) for _ in range(blocks)])
        self.forward_layernorms = nn.ModuleList([nn.LayerNorm(d, eps=1e-8) for _ in range(blocks)])
        self.forward_layers = nn.ModuleList([PointWiseFeedForward(d, dropout) for _ in range(blocks)])
        self.last_layernorm = nn.LayerNorm(d, eps=1e-8)

    def log2feats(self, log_seqs):
        """log_seqs [B, maxlen] int64, left-padded with 0 -> features [B, maxlen, d]."""
        batch, window = log_seqs.shape
        real = log_seqs != 0
        h = self.item_emb(log_seqs) * (self.item_emb.embedding_dim ** 0.5)
        slots = torch.arange(window).unsqueeze(0).expand(batch, window)
        if self.variant == "2020":
            h = h + self.pos_emb(slots)
        else:
            h = h + self.pos_emb((slots + 1) * real)
        h = self.emb_dropout(h)
        keep = real.unsqueeze(-1).to(h.dtype)
        if self.variant == "2020":
            h = h * keep
        future = ~torch.tril(torch.ones(window, window, dtype=torch.bool))  # True = may not attend
        for i in range(len(self.attention_layers)):
            s = h.transpose(0, 1)  # nn.MultiheadAttention without batch_first: [L, B, d]
            if self.variant in ("2020", "2023"):
                q = self.attention_layernorms[i](s)
                attended, _ = self.attention_layers[i](q, s, s, attn_mask=future)
                z = self.forward_layernorms[i]((q + attended).transpose(0, 1))
                h = z + self.forward_layers[i](z)
            elif self.variant == "pre_norm":
                n = self.attention_layernorms[i](s)
                attended, _ = self.attention_layers[i](n, n, n, attn_mask=future)
                a = (s + attended).transpose(0, 1)
                h = a + self.forward_layers[i](self.forward_layernorms[i](a))
            else:  # post_norm
                attended, _ = self.attention_layers[i](s, s, s, attn_mask=future)
                a = self.attention_layernorms[i](s + attended).transpose(0, 1)
                h = self.forward_layernorms[i](a + self.forward_layers[i](a))
            if self.variant == "2020":
                h = h * keep
        return self.last_layernorm(h)

    def encode(self, sessions):
        """Last-position features of each session (a list of item lists), as the code predicts:
        the last maxlen items, left-padded to the window."""
        seqs = torch.zeros(len(sessions), self.maxlen, dtype=torch.int64)
        for b, items in enumerate(sessions):
            kept = items[-self.maxlen:]
            if kept:
                seqs[b, self.maxlen - len(kept):] = torch.tensor(kept, dtype=torch.int64)
        return self.log2feats(seqs)[:, -1, :]

    def item_weights(self):
        return self.item_emb.weight


# --------------------------------------------------------------------------------------------
# RecBole SASRec

class RecBoleMultiHeadAttention(nn.Module):
    def __init__(self, heads, d, eps):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.dense = nn.Linear(d, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)

    def split(self, x):  # [B, L, d] -> [B, heads, L, d / heads]
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)

    def forward(self, x, additive_mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + additive_mask
        context = torch.softmax(scores, dim=-1) @ v
        b, _, t, _ = context.shape
        context = context.permute(0, 2, 1, 3).reshape(b, t, -1)
        return self.LayerNorm(self.dense(context) + x)


class RecBoleFeedForward(nn.Module):
    def __init__(self, d, inner, act, eps):
        super().__init__()
        self.dense_1 = nn.Linear(d, inner)
        self.dense_2 = nn.Linear(inner, d)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.act = act

    def forward(self, x):
        h = self.dense_1(x)
        h = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0))) if self.act == "gelu" else torch.relu(h)
        return self.LayerNorm(self.dense_2(h) + x)


class RecBoleLayer(nn.Module):
    def __init__(self, heads, d, inner, act, eps):
        super().__init__()
        self.multi_head_attention = RecBoleMultiHeadAttention(heads, d, eps)
        self.feed_forward = RecBoleFeedForward(d, inner, act, eps)

    def forward(self, x, mask):
        return self.feed_forward(self.multi_head_attention(x, mask))


class RecBoleEncoder(nn.Module):
    def __init__(self, layers, heads, d, inner, act, eps):
        super().__init__()
        self.layer = nn.ModuleList([RecBoleLayer(heads, d, inner, act, eps) for _ in range(layers)])

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class RecBoleSASRec(nn.Module):
    def __init__(self, n_items, d, heads, layers, inner, maxlen, act="gelu", eps=1e-12, dropout=0.5):
        super().__init__()
        self.maxlen = maxlen
        self.item_embedding = nn.Embedding(n_items, d, padding_idx=0)
        self.position_embedding = nn.Embedding(maxlen, d)
        self.trm_encoder = RecBoleEncoder(layers, heads, d, inner, act, eps)
        self.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, item_seq, item_seq_len):
        """item_seq [B, L] right-padded with 0, item_seq_len [B] >= 1 -> [B, d]."""
        batch, t = item_seq.shape
        positions = torch.arange(t).unsqueeze(0).expand(batch, t)
        h = self.dropout(self.LayerNorm(self.item_embedding(item_seq) + self.position_embedding(positions)))
        allowed = (item_seq > 0).unsqueeze(1).unsqueeze(2) & torch.tril(torch.ones(t, t, dtype=torch.bool))
        additive = (1.0 - allowed.to(h.dtype)) * -10000.0
        h = self.trm_encoder(h, additive)
        return h[torch.arange(batch), item_seq_len - 1]

    def encode(self, sessions):
        seqs = torch.zeros(len(sessions), self.maxlen, dtype=torch.int64)
        lengths = torch.zeros(len(sessions), dtype=torch.int64)
        for b, items in enumerate(sessions):
            kept = items[-self.maxlen:]
            seqs[b, :len(kept)] = torch.tensor(kept, dtype=torch.int64)
            lengths[b] = len(kept)
        return self(seqs, lengths)

    def item_weights(self):
        return self.item_embedding.weight


# --------------------------------------------------------------------------------------------
# Random weights with non-trivial LayerNorms, padding rows included

def randomize(module, gen, emb_std):
    with torch.no_grad():
        for name, p in module.named_parameters():
            if isinstance(p, torch.Tensor) and p.dim() == 1 and ("norm" in name.lower()):
                if name.endswith("weight"):
                    p.copy_(0.5 + torch.rand(p.shape, generator=gen))
                else:
                    p.copy_((torch.rand(p.shape, generator=gen) - 0.5) * 0.4)
            elif name.endswith("bias"):
                p.copy_((torch.rand(p.shape, generator=gen) - 0.5) * 0.2)
            elif "emb" in name:
                # padding rows too: the reference code never trains them, but recpipe must use
                # whatever the checkpoint holds
                p.copy_(torch.randn(p.shape, generator=gen) * emb_std)
            else:
                fan_in = p.shape[1] * (p.shape[2] if p.dim() == 3 else 1)
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * math.sqrt(3.0 / fan_in))


def sessions_for(gen, num_items, maxlen, first_item=1):
    def session(n):
        return torch.randint(first_item, num_items, (n,), generator=gen).tolist()
    mixed = [session(int(n)) for n in torch.randint(1, 2 * maxlen, (11,), generator=gen)]
    return {"len1": [session(1)], "short": [session(maxlen // 3)], "maxlen": [session(maxlen)],
            "longer": [session(maxlen + 13)],
            "batch": [session(1), session(2), session(maxlen - 1), session(maxlen), session(maxlen + 1),
                      session(3 * maxlen)] + mixed}


def write_cases(name, module, sessions, out):
    with torch.no_grad():
        for case, batch in sessions.items():
            encoded = module.encode(batch)
            offsets = torch.zeros(len(batch) + 1, dtype=torch.int64)
            offsets[1:] = torch.cumsum(torch.tensor([len(s) for s in batch], dtype=torch.int64), 0)
            items = torch.tensor([i for s in batch for i in s], dtype=torch.int64)
            fixture_common.save_safetensors({"offsets": offsets, "items": items, "expected": encoded,
                                             "expected_scores": encoded @ module.item_weights().t()},
                                            os.path.join(out, f"{name}.{case}.safetensors"))


class _RecBoleConfigStandIn:
    """Pickled into the RecBole-style checkpoint under a module that does not exist at load time,
    as recbole.config.Config is when RecBole is not installed: the converter must cope."""


def save_recbole_checkpoint(module, path):
    # RecBole saves {'config': Config, 'epoch': ..., 'state_dict': ..., 'other_parameter': ...,
    # 'optimizer': ...}; the config's class lives in recbole, which the converter need not have.
    # The stand-in module exists only while saving, so loading meets an unknown class.
    package, submodule = types.ModuleType("recbole_stand_in"), types.ModuleType("recbole_stand_in.config")
    _RecBoleConfigStandIn.__module__ = submodule.__name__
    _RecBoleConfigStandIn.__qualname__ = "Config"
    submodule.Config = _RecBoleConfigStandIn
    package.config = submodule
    sys.modules[package.__name__], sys.modules[submodule.__name__] = package, submodule
    try:
        torch.save({"config": _RecBoleConfigStandIn(), "epoch": 3, "state_dict": module.state_dict(),
                    "other_parameter": None}, path)
    finally:
        del sys.modules[package.__name__], sys.modules[submodule.__name__]


MODELS = {
    # name: (constructor, converter arguments)
    "sasrec_pytorch": (lambda: SASRecPyTorch(400, 48, 2, 2, 30, "2023"),
                       ["--layout", "sasrec-pytorch", "--heads", "2", "--maxlen", "30"]),
    "sasrec_pytorch_2020": (lambda: SASRecPyTorch(300, 32, 1, 2, 25, "2020"),
                            ["--layout", "sasrec-pytorch", "--heads", "1", "--maxlen", "25"]),
    "sasrec_pytorch_pre_norm": (lambda: SASRecPyTorch(300, 32, 4, 1, 20, "pre_norm"),
                                ["--layout", "sasrec-pytorch", "--heads", "4", "--maxlen", "20", "--block", "pre_norm"]),
    "sasrec_pytorch_post_norm": (lambda: SASRecPyTorch(300, 32, 2, 2, 20, "post_norm"),
                                 ["--layout", "sasrec-pytorch", "--heads", "2", "--maxlen", "20",
                                  "--block", "post_norm"]),
    "recbole": (lambda: RecBoleSASRec(500, 64, 2, 2, 128, 50, "gelu", 1e-12),
                ["--layout", "recbole", "--heads", "2"]),
    "recbole_relu": (lambda: RecBoleSASRec(200, 32, 4, 1, 48, 20, "relu", 1e-12),
                     ["--layout", "recbole", "--heads", "4", "--activation", "relu", "--maxlen", "20"]),
}


def main():
    parser = fixture_common.argument_parser(__doc__)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ",".join(MODELS))
    args = parser.parse_args()
    fixture_common.begin_output(args.out)
    for index, name in enumerate(args.models.split(",")):
        if name not in MODELS:
            parser.error(f"unknown model {name!r}")
        make, convert_args = MODELS[name]
        torch.manual_seed(100 + index)
        module = make().eval()
        gen = torch.Generator().manual_seed(200 + index)
        randomize(module, gen, 0.35)
        checkpoint = os.path.join(args.out, name + ".pth")
        if isinstance(module, RecBoleSASRec):
            save_recbole_checkpoint(module, checkpoint)
        else:
            torch.save(module.state_dict(), checkpoint)
        converted = os.path.join(args.out, name + ".safetensors")
        code = convert_sasrec.main([checkpoint, "--out", converted] + convert_args)
        if code != 0:
            sys.exit(f"reference_sasrec.py: convert_sasrec.py failed on {checkpoint}")
        num_items = module.item_weights().shape[0]
        write_cases(name, module, sessions_for(gen, num_items, module.maxlen), args.out)
    fixture_common.write_marker(args.out)
    print(f"reference_sasrec.py: wrote {args.models} to {args.out}")


if __name__ == "__main__":
    main()
