# SPDX-License-Identifier: Apache-2.0
# recpipe: converts SASRec checkpoints of two PyTorch implementations to recpipe safetensors.
"""Converts the state_dict of a PyTorch SASRec into the safetensors file (and config JSON) that
recpipe::models::session_transformer loads, so recpipe reproduces the model's outputs.

Layouts (docs/sasrec-checkpoints.md):
  sasrec-pytorch  github.com/pmixer/SASRec.pytorch (torch.save(model.state_dict(), ...)):
                  item_emb, pos_emb, attention_layernorms.N, attention_layers.N (MultiheadAttention),
                  forward_layernorms.N, forward_layers.N.conv1/conv2 (Conv1d k=1), last_layernorm.
                  Window positions: pos_emb with maxlen + 1 rows = slots 1..maxlen, 0 for padding
                  (the code since 2023); maxlen rows = slots 0..maxlen-1 with the timeline mask
                  (the code before). --block: query_norm (its classic block, default), or
                  pre_norm / post_norm (the 2024 code's norm_first = true / false).
  recbole         RecBole's SASRec (a RecBole checkpoint dict, or its state_dict): item_embedding,
                  position_embedding, trm_encoder.layer.N.multi_head_attention.{query,key,value,
                  dense,LayerNorm}, trm_encoder.layer.N.feed_forward.{dense_1,dense_2,LayerNorm},
                  LayerNorm.

Usage (Debian's python has python3-torch):
  /usr/bin/python3 tools/convert_sasrec.py model.pth --layout sasrec-pytorch --heads 1 --maxlen 200 \\
      --out sasrec.safetensors
  /usr/bin/python3 tools/convert_sasrec.py saved/SASRec-Nov-30-2026.pth --layout recbole --heads 2 \\
      --out sasrec.safetensors

Writes OUT (weights under recpipe's names, the config in the metadata "recpipe.model" /
"recpipe.config") and OUT with the extension .json (the same config; --config-out to move it).
Hyperparameters the weights cannot tell: --heads (always), --maxlen (sasrec-pytorch; for recbole
it is the position table's rows), --eps (default 1e-8 / 1e-12), --activation (recbole's
hidden_act, default gelu). The checkpoint is unpickled by torch.load: convert only files you
trust. Exit 0 on success, 1 with a message naming the problem (missing or
misshaped tensor, unknown layout, bad hyperparameter), 2 without torch.
"""

import argparse
import json
import math
import os
import re
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LAYOUTS = ("sasrec-pytorch", "recbole")
BLOCKS = ("query_norm", "pre_norm", "post_norm")


class ConversionError(Exception):
    """A checkpoint or hyperparameter problem; the message names the tensor or option."""


# --------------------------------------------------------------------------------------------
# Loading

class _Stub:
    """Stands in for a pickled class whose module is not installed (e.g. recbole.config.Config
    in a RecBole checkpoint): the converter needs only the tensors."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _StubModule(types.ModuleType):
    """A missing module whose every attribute is a _Stub class (installed only while loading)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        stub = type(name, (_Stub,), {"__module__": self.__name__})
        setattr(self, name, stub)
        return stub


def _torch_load(path):
    """torch.load that stubs the classes of modules this Python lacks (torch 1.13 ignores a
    custom pickle_module, so the missing modules are stood in for in sys.modules, then removed)."""
    import torch

    stubbed = []
    try:
        for _ in range(32):
            try:
                try:
                    return torch.load(path, map_location="cpu", weights_only=False)
                except TypeError:  # a torch without weights_only
                    return torch.load(path, map_location="cpu")
            except ModuleNotFoundError as e:
                if not e.name or e.name in sys.modules:
                    raise
                parts = e.name.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name not in sys.modules:
                        sys.modules[name] = _StubModule(name)
                        stubbed.append(name)
        raise ConversionError("needs too many modules this Python does not have")
    finally:
        for name in stubbed:
            del sys.modules[name]


def load_state_dict(path):
    """The {name: tensor} of a checkpoint: a state_dict, a dict holding one under 'state_dict'
    or 'model_state_dict' (RecBole's checkpoint), or a whole pickled module; a DataParallel
    'module.' prefix is removed."""
    import torch

    if not os.path.exists(path):
        raise ConversionError("no such file")
    try:
        obj = _torch_load(path)
    except ConversionError:
        raise
    except Exception as e:  # a truncated or foreign file: say which
        raise ConversionError(f"cannot be read by torch.load ({type(e).__name__}: {e})")
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"holds no state_dict (a dict of tensors, or one under 'state_dict')")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


# --------------------------------------------------------------------------------------------
# Conversion

class _Reader:
    """Takes tensors from a state_dict, checking each shape; remembers what was used."""

    def __init__(self, state, layout):
        self.state = state
        self.layout = layout
        self.used = set()

    def get(self, name, shape, why):
        if name not in self.state:
            raise ConversionError(f"{self.layout}: tensor '{name}' is missing (needed for {why})")
        t = self.state[name]
        if list(t.shape) != list(shape):
            raise ConversionError(f"{self.layout}: tensor '{name}' has shape {list(t.shape)} but {why} "
                                  f"needs {list(shape)}")
        self.used.add(name)
        import torch

        return t.detach().to(dtype=torch.float32).contiguous()

    def shape_of(self, name, rank, why):
        if name not in self.state:
            raise ConversionError(f"{self.layout}: tensor '{name}' is missing (needed for {why})")
        shape = list(self.state[name].shape)
        if len(shape) != rank:
            raise ConversionError(f"{self.layout}: tensor '{name}' has shape {shape} but {why} needs a rank-{rank} tensor")
        return shape

    def count_layers(self, pattern):
        found = {int(m.group(1)) for k in self.state for m in [re.match(pattern, k)] if m}
        if found and sorted(found) != list(range(len(found))):
            raise ConversionError(f"{self.layout}: layer numbers {sorted(found)} are not 0..{len(found) - 1}")
        return len(found)

    def check_all_used(self, ignore_extra):
        extra = sorted(set(self.state) - self.used)
        if extra and not ignore_extra:
            raise ConversionError(f"{self.layout}: unexpected tensors {extra[:8]}{' ...' if len(extra) > 8 else ''} "
                                  "(not part of this layout; --ignore-extra drops them)")


def _check_heads(heads, d, layout):
    if heads is None or heads < 1:
        raise ConversionError(f"{layout}: --heads is required (the number of attention heads; weights cannot tell)")
    if d % heads != 0:
        raise ConversionError(f"{layout}: --heads {heads} does not divide the embedding width {d}")


def convert_sasrec_pytorch(state, heads, maxlen, eps=None, block="query_norm", positions=None, timeline_mask=None,
                           ignore_extra=False):
    """SASRec.pytorch state_dict -> (recpipe tensors, recpipe config)."""
    layout = "sasrec-pytorch"
    r = _Reader(state, layout)
    rows, d = r.shape_of("item_emb.weight", 2, "the item embedding")
    _check_heads(heads, d, layout)
    if maxlen is None or maxlen < 1:
        raise ConversionError(f"{layout}: --maxlen is required (the window the model was trained with, args.maxlen)")
    if block not in BLOCKS:
        raise ConversionError(f"{layout}: unknown --block '{block}' ({', '.join(BLOCKS)})")
    pos_rows = r.shape_of("pos_emb.weight", 2, "the position embedding")[0]
    if positions is None:
        if pos_rows == maxlen + 1:
            positions = "window_slot_from_1"
        elif pos_rows == maxlen:
            positions = "window_slot"
        else:
            raise ConversionError(
                f"{layout}: tensor 'pos_emb.weight' has {pos_rows} rows but --maxlen {maxlen} needs {maxlen + 1} "
                f"(positions 1..{maxlen}, 0 = padding, the code since 2023) or {maxlen} (positions 0..{maxlen - 1}, "
                "the code before)")
    if positions not in ("window_slot", "window_slot_from_1"):
        raise ConversionError(f"{layout}: unknown --positions '{positions}' (window_slot, window_slot_from_1)")
    if timeline_mask is None:
        timeline_mask = positions == "window_slot" and block == "query_norm"
    layers = r.count_layers(r"attention_layers\.(\d+)\.")
    if layers == 0:
        raise ConversionError(f"{layout}: no 'attention_layers.N.*' tensors: not a SASRec.pytorch state_dict")
    eps = 1e-8 if eps is None else eps
    out = {"item_embedding.weight": r.get("item_emb.weight", [rows, d], "the item embedding"),
           "position_embedding.weight": r.get("pos_emb.weight",
                                              [maxlen + 1 if positions == "window_slot_from_1" else maxlen, d],
                                              f"positions = {positions} with --maxlen {maxlen}")}
    for i in range(layers):
        src, dst = f"{i}.", f"encoder.layers.{i}."
        why = f"block {i} with embedding width {d}"
        out[dst + "self_attn.in_proj_weight"] = r.get(f"attention_layers.{src}in_proj_weight", [3 * d, d], why)
        out[dst + "self_attn.in_proj_bias"] = r.get(f"attention_layers.{src}in_proj_bias", [3 * d], why)
        out[dst + "self_attn.out_proj.weight"] = r.get(f"attention_layers.{src}out_proj.weight", [d, d], why)
        out[dst + "self_attn.out_proj.bias"] = r.get(f"attention_layers.{src}out_proj.bias", [d], why)
        for conv, linear in (("conv1", "linear1"), ("conv2", "linear2")):
            # Conv1d(d, d, kernel_size=1) is a linear layer: weight [out, in, 1]
            out[dst + linear + ".weight"] = r.get(f"forward_layers.{src}{conv}.weight", [d, d, 1], why)[:, :, 0].contiguous()
            out[dst + linear + ".bias"] = r.get(f"forward_layers.{src}{conv}.bias", [d], why)
        for norm, name in (("attention_layernorms", "norm1"), ("forward_layernorms", "norm2")):
            out[dst + name + ".weight"] = r.get(f"{norm}.{src}weight", [d], why)
            out[dst + name + ".bias"] = r.get(f"{norm}.{src}bias", [d], why)
    out["final_norm.weight"] = r.get("last_layernorm.weight", [d], "the last LayerNorm")
    out["final_norm.bias"] = r.get("last_layernorm.bias", [d], "the last LayerNorm")
    r.check_all_used(ignore_extra)
    config = {"model": "session_transformer", "num_items": rows, "embedding_dim": d, "max_length": maxlen,
              "num_heads": heads, "ffn_dim": d, "num_layers": layers, "activation": "relu",
              "norm_first": block != "post_norm", "embedding_scale": math.sqrt(d), "eps": eps,
              "query_only_norm": block == "query_norm", "input_norm": False, "final_norm": True,
              "padding": "left", "positions": positions, "attend_to_padding": True,
              "timeline_mask": bool(timeline_mask), "padding_id": 0}
    return out, config


def convert_recbole(state, heads, maxlen=None, eps=None, activation="gelu", ignore_extra=False):
    """RecBole SASRec state_dict -> (recpipe tensors, recpipe config)."""
    import torch

    layout = "recbole"
    r = _Reader(state, layout)
    rows, d = r.shape_of("item_embedding.weight", 2, "the item embedding")
    _check_heads(heads, d, layout)
    pos_rows = r.shape_of("position_embedding.weight", 2, "the position embedding")[0]
    maxlen = pos_rows if maxlen is None else maxlen
    if activation not in ("gelu", "relu"):
        raise ConversionError(f"{layout}: --activation '{activation}' is not supported (gelu, relu)")
    layers = r.count_layers(r"trm_encoder\.layer\.(\d+)\.")
    if layers == 0:
        raise ConversionError(f"{layout}: no 'trm_encoder.layer.N.*' tensors: not a RecBole SASRec state_dict")
    inner = r.shape_of("trm_encoder.layer.0.feed_forward.dense_1.weight", 2, "the feed-forward layer")[0]
    eps = 1e-12 if eps is None else eps
    out = {"item_embedding.weight": r.get("item_embedding.weight", [rows, d], "the item embedding"),
           "position_embedding.weight": r.get("position_embedding.weight", [maxlen, d],
                                              f"MAX_ITEM_LIST_LENGTH = --maxlen {maxlen}"),
           "input_norm.weight": r.get("LayerNorm.weight", [d], "the input LayerNorm"),
           "input_norm.bias": r.get("LayerNorm.bias", [d], "the input LayerNorm")}
    for i in range(layers):
        src, dst = f"trm_encoder.layer.{i}.", f"encoder.layers.{i}."
        why = f"layer {i} with hidden_size {d} and inner_size {inner}"
        att, ff = src + "multi_head_attention.", src + "feed_forward."
        out[dst + "self_attn.in_proj_weight"] = torch.cat(
            [r.get(att + p + ".weight", [d, d], why) for p in ("query", "key", "value")])
        out[dst + "self_attn.in_proj_bias"] = torch.cat(
            [r.get(att + p + ".bias", [d], why) for p in ("query", "key", "value")])
        out[dst + "self_attn.out_proj.weight"] = r.get(att + "dense.weight", [d, d], why)
        out[dst + "self_attn.out_proj.bias"] = r.get(att + "dense.bias", [d], why)
        out[dst + "norm1.weight"] = r.get(att + "LayerNorm.weight", [d], why)
        out[dst + "norm1.bias"] = r.get(att + "LayerNorm.bias", [d], why)
        out[dst + "linear1.weight"] = r.get(ff + "dense_1.weight", [inner, d], why)
        out[dst + "linear1.bias"] = r.get(ff + "dense_1.bias", [inner], why)
        out[dst + "linear2.weight"] = r.get(ff + "dense_2.weight", [d, inner], why)
        out[dst + "linear2.bias"] = r.get(ff + "dense_2.bias", [d], why)
        out[dst + "norm2.weight"] = r.get(ff + "LayerNorm.weight", [d], why)
        out[dst + "norm2.bias"] = r.get(ff + "LayerNorm.bias", [d], why)
    r.check_all_used(ignore_extra)
    config = {"model": "session_transformer", "num_items": rows, "embedding_dim": d, "max_length": maxlen,
              "num_heads": heads, "ffn_dim": inner, "num_layers": layers, "activation": activation,
              "norm_first": False, "embedding_scale": 1.0, "eps": eps, "query_only_norm": False,
              "input_norm": True, "final_norm": False, "padding": "right", "positions": "first_item",
              "attend_to_padding": False, "timeline_mask": False, "padding_id": 0}
    return out, config


def convert(state, layout, **options):
    if layout == "sasrec-pytorch":
        return convert_sasrec_pytorch(state, **options)
    if layout == "recbole":
        return convert_recbole(state, **options)
    raise ConversionError(f"unknown layout '{layout}' (one of: {', '.join(LAYOUTS)})")


def check_finite(tensors):
    import torch

    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise ConversionError(f"tensor '{name}' holds NaN or infinite values (a diverged checkpoint?)")


# --------------------------------------------------------------------------------------------
# Command line

def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="the .pth / .pt file")
    p.add_argument("--layout", required=True, help="one of: " + ", ".join(LAYOUTS))
    p.add_argument("--out", required=True, help="recpipe safetensors file to write")
    p.add_argument("--config-out", help="config JSON to write (default: OUT with the extension .json)")
    p.add_argument("--heads", type=int, help="attention heads (args.num_heads / n_heads)")
    p.add_argument("--maxlen", type=int, help="window length (args.maxlen / MAX_ITEM_LIST_LENGTH)")
    p.add_argument("--eps", type=float, help="LayerNorm eps (default 1e-8 sasrec-pytorch, 1e-12 recbole)")
    p.add_argument("--activation", default="gelu", help="recbole hidden_act: gelu (default) or relu")
    p.add_argument("--block", default="query_norm", help="sasrec-pytorch block: " + ", ".join(BLOCKS))
    p.add_argument("--positions", help="sasrec-pytorch: window_slot or window_slot_from_1 (default: from pos_emb rows)")
    p.add_argument("--timeline-mask", choices=("yes", "no"),
                   help="sasrec-pytorch: zero padded slots after each block (default: yes for window_slot positions)")
    p.add_argument("--ignore-extra", action="store_true", help="drop tensors the layout does not use")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("convert_sasrec.py: needs PyTorch (apt-get install python3-torch)", file=sys.stderr)
        return 2
    import fixture_common

    try:
        if args.layout not in LAYOUTS:
            raise ConversionError(f"unknown layout '{args.layout}' (one of: {', '.join(LAYOUTS)})")
        state = load_state_dict(args.checkpoint)
        if args.layout == "sasrec-pytorch":
            timeline = None if args.timeline_mask is None else args.timeline_mask == "yes"
            tensors, config = convert_sasrec_pytorch(state, args.heads, args.maxlen, args.eps, args.block,
                                                     args.positions, timeline, args.ignore_extra)
        else:
            tensors, config = convert_recbole(state, args.heads, args.maxlen, args.eps, args.activation,
                                              args.ignore_extra)
        check_finite(tensors)
    except ConversionError as e:
        print(f"convert_sasrec.py: {args.checkpoint}: {e}", file=sys.stderr)
        return 1
    text = json.dumps(config)
    fixture_common.save_safetensors(tensors, args.out, {"recpipe.model": "session_transformer", "recpipe.config": text})
    config_out = args.config_out or os.path.splitext(args.out)[0] + ".json"
    with open(config_out, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    print(f"convert_sasrec.py: {args.layout} -> {args.out} ({config['num_layers']} layers, {config['num_items']} items, "
          f"width {config['embedding_dim']}), config {config_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
