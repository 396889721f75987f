"""Patch reprogramming (Time-LLM, Jin et al., ICLR 2024, https://arxiv.org/abs/2310.01728, Sec. 3.1).

Patch embeddings (queries) attend over a small set of text prototypes (keys and values) that a
linear mapping layer forms from the LLM's whole vocabulary, so each patch is re-expressed in the
LLM's own embedding space before it enters the frozen LLM.

    TextPrototypes:      word embeddings [V, d_llm] -> prototypes [num_tokens, d_llm]
    ReprogrammingLayer:  patches [S, P, d_model], prototypes [num_tokens, d_llm] -> [S, P, d_llm]

`keep_attention = True` stores the latest attention weights [S, heads, P, num_tokens] in
`attention_maps`: which text prototypes each patch reads (`--save_attention 1` plots them).
"""
import math

import torch
from torch import nn


class TextPrototypes(nn.Module):
    """The mapping layer: each prototype is a learned linear combination of all vocabulary embeddings.

    rank > 0 factorises the [num_tokens, V] map into [num_tokens, rank] x [rank, V] (an accuracy-
    affecting speed option, off by default). The prototypes do not depend on the input, so
    `cached()` computes them once per evaluation pass (any mode switch or state load clears it) and, with
    `defer_gradients`, once per optimizer step under gradient accumulation: micro-batches use a
    detached copy whose gradients add up, and `flush_gradients()` back-propagates their sum through
    the map once before the optimizer step (the trainer calls it on every module that has it).
    Deferral needs a single process: DDP reduces gradients during backward, before the flush.
    """

    def __init__(self, vocab_size: int, num_tokens: int, rank: int = 0):
        super().__init__()
        if num_tokens <= 0:
            raise ValueError(f"--num_tokens must be positive, got {num_tokens}")
        if rank < 0:
            raise ValueError(f"--mapping_rank must be >= 0, got {rank}")
        self.mapping = nn.Linear(vocab_size, num_tokens) if rank == 0 else nn.Linear(rank, num_tokens)
        self.reduce = nn.Linear(vocab_size, rank, bias=False) if rank else None
        self.defer_gradients = False
        self._evaluation = (None, None)  # (word embeddings' address and dtype, prototypes), one evaluation pass
        self._deferred = None  # (graph output, detached leaf), one optimizer step

    def forward(self, word_embeddings: torch.Tensor) -> torch.Tensor:
        """word_embeddings [V, d_llm] -> prototypes [num_tokens, d_llm]."""
        # W [num_tokens, V] @ E [V, d_llm]: the same as mapping(E.T).T without transposing a V x d_llm copy.
        embeddings = word_embeddings.to(self.mapping.weight.dtype)
        if self.reduce is not None:
            embeddings = torch.matmul(self.reduce.weight, embeddings)  # [rank, d_llm]
        return torch.matmul(self.mapping.weight, embeddings) + self.mapping.bias.unsqueeze(1)

    def train(self, mode: bool = True) -> "TextPrototypes":
        # Every evaluation pass starts with eval(): the weights may have changed since the last one
        # (fused optimizers update in place without bumping tensor versions, so those cannot tell).
        self._evaluation = (None, None)
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._evaluation = (None, None)
        super()._load_from_state_dict(*args, **kwargs)

    def cached(self, word_embeddings: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            key = (word_embeddings.data_ptr(), word_embeddings.dtype)
            if self._evaluation[0] != key:
                self._evaluation = (key, self.forward(word_embeddings))
            return self._evaluation[1]
        if not self.defer_gradients:
            return self.forward(word_embeddings)
        if self._deferred is None:
            output = self.forward(word_embeddings)
            self._deferred = (output, output.detach().requires_grad_())
        return self._deferred[1]

    def flush_gradients(self) -> None:
        if self._deferred is not None:
            output, leaf = self._deferred
            self._deferred = None
            if leaf.grad is not None:
                output.backward(leaf.grad)


class ReprogrammingLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_keys: int, d_llm: int, attention_dropout: float = 0.1):
        super().__init__()
        self.n_heads, self.d_keys = n_heads, d_keys
        self.query_projection = nn.Linear(d_model, d_keys * n_heads)
        self.key_projection = nn.Linear(d_llm, d_keys * n_heads)
        self.value_projection = nn.Linear(d_llm, d_keys * n_heads)
        self.out_projection = nn.Linear(d_keys * n_heads, d_llm)
        self.dropout = nn.Dropout(attention_dropout)
        self.keep_attention = False
        self.attention_maps = None

    def forward(self, patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        series, patch_count, _ = patches.shape
        heads = self.n_heads
        queries = self.query_projection(patches).view(series, patch_count, heads, self.d_keys)
        keys = self.key_projection(prototypes).view(-1, heads, self.d_keys)  # [num_tokens, H, E]
        values = self.value_projection(prototypes).view(-1, heads, self.d_keys)
        scores = torch.einsum("blhe,she->bhls", queries, keys) / math.sqrt(self.d_keys)
        attention = self.dropout(torch.softmax(scores, dim=-1))  # [S, H, P, num_tokens]
        if self.keep_attention:
            self.attention_maps = attention.detach()
        reprogrammed = torch.einsum("bhls,she->blhe", attention, values).reshape(series, patch_count, -1)
        return self.out_projection(reprogrammed)  # [S, P, d_llm]
