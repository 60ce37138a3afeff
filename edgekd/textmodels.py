"""Text classifiers of the zoo and the ``hf:<folder>`` source: every model takes ``(input_ids, attention_mask)``
(int64, right padding) and returns ``(N, num_classes)`` logits.

They read the mask — never ``pack_padded_sequence`` (it does not export) — and give the same logits whatever the
padding length, so the device may pad a batch to its longest text only:

* ``edgekd:bilstm`` — embedding, then per layer a forward LSTM and a backward LSTM run on each sequence
  reversed *by its own length* (a gather), so the backward direction starts at the last real token, not on
  padding; masked mean pooling;
* ``edgekd:textcnn`` — embedding zeroed on padding, 1-D convolutions (odd kernels), ReLU, masked max pooling
  (Kim, 2014);
* ``edgekd:text_transformer`` — learned positions, pre-LN encoder layers with padding keys masked out of the
  attention, masked mean pooling;
* ``hf:<folder>`` — a Hugging Face ``AutoModelForSequenceClassification`` read with ``local_files_only``.

Each model's pooled hidden state passes through the submodule ``pooled`` (an identity): the feature tap for
hidden-state distillation (``distill.method: hidden``).

Example:
    >>> model = bilstm(num_classes=2, vocab_size=100, embed_dim=16, hidden=16)      # doctest: +SKIP
    >>> logits = model(input_ids, attention_mask)                                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd.deploy.errors import DependencyError, InputFileError, UsageError


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (N, L, D) over the positions where ``mask`` (N, L) is 1."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def reverse_by_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x`` (N, L, D) within its first ``lengths[n]`` positions (padding stays put);
    its own inverse."""
    pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    last = (lengths - 1).unsqueeze(1)
    index = torch.where(pos <= last, last - pos, pos)
    return x[torch.arange(x.shape[0], device=x.device).unsqueeze(1), index]


class BiLSTMClassifier(nn.Module):
    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int, hidden: int, layers: int,
                 dropout: float, pad_id: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        dims = [embed_dim] + [2 * hidden] * (layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in dims)
        self.backward_lstms = nn.ModuleList(nn.LSTM(d, hidden, batch_first=True) for d in dims)
        self.drop = nn.Dropout(dropout)
        self.pooled = nn.Identity()
        self.head = nn.Linear(2 * hidden, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(1).clamp(min=1)
        x = self.drop(self.embed(input_ids))
        for fwd, bwd in zip(self.forward_lstms, self.backward_lstms, strict=True):
            ahead, _ = fwd(x)
            back, _ = bwd(reverse_by_length(x, lengths))
            x = self.drop(torch.cat([ahead, reverse_by_length(back, lengths)], dim=-1))
        return self.head(self.drop(self.pooled(masked_mean(x, attention_mask))))


class TextCNN(nn.Module):
    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int, channels: int, kernels, dropout: float,
                 pad_id: int):
        super().__init__()
        if any(k % 2 == 0 for k in kernels):
            raise UsageError(f"edgekd:textcnn kernels must be odd (centred, padding-independent), got {list(kernels)}")
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k, padding=k // 2) for k in kernels)
        self.drop = nn.Dropout(dropout)
        self.pooled = nn.Identity()
        self.head = nn.Linear(channels * len(kernels), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.to(torch.float32).unsqueeze(1)  # (N, 1, L)
        x = (self.embed(input_ids) * m.transpose(1, 2)).transpose(1, 2)  # padding is zeros, as beyond the end
        # after ReLU every value is >= 0, so zeroing the padding and taking the max is the max over real tokens
        feats = [(F.relu(conv(x)) * m).amax(dim=-1) for conv in self.convs]
        return self.head(self.drop(self.pooled(torch.cat(feats, dim=-1))))


class EncoderLayer(nn.Module):
    """Pre-LN self-attention + MLP; padding keys get a large negative score (exactly zero weight)."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise UsageError(f"edgekd:text_transformer: embed_dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(dim // self.heads) + bias
        attn = self.drop(scores.softmax(-1)) @ v  # (N, H, L, d)
        x = x + self.drop(self.out(attn.transpose(1, 2).reshape(n, length, dim)))
        return x + self.drop(self.mlp(self.norm2(x)))


class TextTransformer(nn.Module):
    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int, heads: int, ff: int, layers: int,
                 max_length: int, dropout: float, pad_id: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.positions = nn.Embedding(max_length, embed_dim)
        self.layers = nn.ModuleList(EncoderLayer(embed_dim, heads, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.drop = nn.Dropout(dropout)
        self.pooled = nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.drop(self.embed(input_ids) + self.positions(pos).unsqueeze(0))
        bias = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * -1e9
        for layer in self.layers:
            x = layer(x, bias)
        return self.head(self.drop(self.pooled(masked_mean(self.norm(x), attention_mask))))


def bilstm(num_classes: int, vocab_size: int = 8000, embed_dim: int = 128, hidden: int = 128, layers: int = 1,
           dropout: float = 0.1, pad_id: int = 0, **_shape):
    """Bidirectional LSTM (``layers`` stacked), masked mean pooling, linear head. Feature tap: ``pooled``
    (2·hidden)."""
    return BiLSTMClassifier(num_classes, vocab_size, embed_dim, hidden, layers, dropout, pad_id)


def textcnn(num_classes: int, vocab_size: int = 8000, embed_dim: int = 64, hidden: int = 64, kernels=(3, 5),
            dropout: float = 0.1, pad_id: int = 0, **_shape):
    """TextCNN (Kim, EMNLP 2014): ``hidden`` filters per odd kernel size, masked max pooling. Feature tap:
    ``pooled`` (hidden·len(kernels))."""
    return TextCNN(num_classes, vocab_size, embed_dim, hidden, tuple(kernels), dropout, pad_id)


def text_transformer(num_classes: int, vocab_size: int = 8000, embed_dim: int = 128, heads: int = 4,
                     hidden: int = 256, layers: int = 2, dropout: float = 0.1, pad_id: int = 0,
                     max_length: int | None = None, input_size: int = 512, **_shape):
    """A small pre-LN Transformer encoder (``hidden`` is the MLP width), learned positions up to
    ``max_length`` (default the data's), masked mean pooling. Feature tap: ``pooled`` (embed_dim)."""
    return TextTransformer(num_classes, vocab_size, embed_dim, heads, hidden, layers, max_length or input_size,
                           dropout, pad_id)


# ---------------------------------------------------------------------------------------------- Hugging Face
class HFClassifier(nn.Module):
    """A Hugging Face sequence classifier as ``(input_ids, attention_mask) -> logits``; the masked mean of its
    last hidden states passes through ``pooled`` (the hidden-state distillation tap)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.pooled = nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                         return_dict=True)
        self.pooled(masked_mean(out.hidden_states[-1], attention_mask))
        return out.logits


def hf_model(folder: str, num_classes: int, in_channels: int = 0, weights: str | None = None, **kwargs):
    """``hf:<folder>``: ``AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)``
    with ``num_labels=num_classes`` (a new head when the folder's has another size). Nothing is downloaded.

    Raises:
        DependencyError: ``transformers`` is not installed.
        InputFileError: the folder does not hold a model.
    """
    try:
        import transformers
    except ImportError:
        raise DependencyError("hf: models need the Python package 'transformers', which is not installed",
                              hint="pip install 'edgekd[hf]'") from None
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise InputFileError(f"hf:{folder}: no Hugging Face model folder there (no config.json)",
                             hint="save one with model.save_pretrained(folder), or point at a local snapshot; "
                                  "nothing is downloaded")
    kwargs.setdefault("attn_implementation", "eager")  # plain matmuls: exports and quantizes everywhere
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=num_classes, local_files_only=True, ignore_mismatched_sizes=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise InputFileError(f"hf:{folder}: cannot load the model: {str(exc).splitlines()[0][:300]}",
                             hint="the folder needs config.json and model weights (safetensors)") from None
    return HFClassifier(model)
