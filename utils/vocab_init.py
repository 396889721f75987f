"""Task vocabulary initialisation of Time-LLM's mapping layer (text prototypes).

`--use_keyword_init 1 --vocab_init_method weighted|cluster|random_from_keywords` starts the mapping
W [num_tokens, V] (prototype j = sum_v W[j, v] E_v + b_j) from words that describe time series
instead of a random mix of the whole vocabulary:
    weighted              row j: a random convex combination of all keyword embeddings (weights
                          softmax(N(0, 1) / 0.5), different for every row)
    cluster               KMeans (scikit-learn) on the vocabulary embeddings nearest the keywords
                          (10 per prototype); row j: softmax of the cosine similarity to centre j at
                          temperature 0.05, so prototype j is the centre's neighbourhood
    random_from_keywords  row j: random convex weights (flat Dirichlet) over a random subset of up to
                          10 keywords
The specification's `weighted` set every row to the same keyword weights, so all prototypes started
identical (and stayed symmetric); every method here gives distinct rows. Keywords that the tokenizer
splits into several tokens are skipped (`keyword_token_ids`). The bias starts at zero.

`--use_adaptive_vocab 1` sets --num_tokens from the task size (`adaptive_num_tokens`).
"""
import math

import numpy as np
import torch
from torch import nn

TIME_SERIES_KEYWORDS = (
    # trend
    "increase", "decrease", "rise", "fall", "grow", "decline", "stable", "steady", "upward", "downward", "ascending", "descending",
    # periodicity
    "cycle", "period", "seasonal", "daily", "weekly", "monthly", "yearly", "annual", "recurring", "periodic", "repetitive",
    # change
    "change", "fluctuate", "vary", "shift", "swing", "oscillate", "wave",
    # extremes
    "peak", "valley", "maximum", "minimum", "highest", "lowest", "extreme", "high", "low", "top", "bottom",
    # statistics
    "average", "mean", "median", "normal", "typical", "unusual", "anomaly",
    # forecasting
    "forecast", "predict", "expect", "anticipate", "estimate", "project",
    # time
    "future", "past", "history", "previous", "next", "current", "recent", "before", "after", "yesterday", "tomorrow",
    # quantity and degree
    "more", "less", "few", "many", "some", "most", "all", "none",
    "slight", "moderate", "significant", "dramatic", "rapid", "slow", "gradual",
)
METHODS = ("weighted", "cluster", "random_from_keywords")


def keyword_token_ids(tokenizer, keywords=TIME_SERIES_KEYWORDS) -> list[int]:
    """Ids of the keywords the tokenizer keeps whole, with and without a leading space (BPE
    vocabularies hold " rise" and "rise" as different tokens), sorted and without repeats."""
    ids = set()
    for word in keywords:
        for text in (word, " " + word):
            pieces = tokenizer(text, add_special_tokens=False).input_ids
            if len(pieces) == 1:
                ids.add(pieces[0])
    return sorted(ids)


def adaptive_num_tokens(seq_len: int, pred_len: int, n_vars: int, base_tokens: int = 1000) -> int:
    """Prototype count scaled by log(seq_len) log(pred_len) sqrt(n_vars) relative to ETT 96 -> 96
    with 7 variables, kept in [500, 2000]."""
    complexity = math.log(seq_len) * math.log(pred_len) * math.sqrt(n_vars)
    reference = math.log(96) * math.log(96) * math.sqrt(7)
    return max(500, min(2000, round(base_tokens * complexity / reference)))


@torch.no_grad()
def initialise_mapping(mapping: nn.Linear, word_embeddings: torch.Tensor, tokenizer, method: str, seed: int = 0) -> None:
    """Overwrite `mapping` (Linear(V -> num_tokens)) with the module docstring's initialisation."""
    if method not in METHODS:
        raise ValueError(f"--vocab_init_method must be one of {METHODS}, got {method!r}")
    keywords = keyword_token_ids(tokenizer)
    if len(keywords) < 2:
        raise ValueError(f"--use_keyword_init: the tokenizer keeps only {len(keywords)} keyword(s) whole; at least 2 are needed")
    num_tokens, vocab_size = mapping.weight.shape
    keywords = torch.tensor([k for k in keywords if k < vocab_size])
    generator = torch.Generator().manual_seed(seed)
    weight = torch.zeros(num_tokens, vocab_size)
    if method == "weighted":
        logits = torch.randn(num_tokens, len(keywords), generator=generator) / 0.5
        weight[:, keywords] = torch.softmax(logits, dim=-1)
    elif method == "random_from_keywords":
        for row in range(num_tokens):
            chosen = keywords[torch.randperm(len(keywords), generator=generator)[:10]]
            mix = -torch.rand(len(chosen), generator=generator).clamp_min(1e-12).log()  # Exp(1) draws: a flat Dirichlet once normalised
            weight[row, chosen] = mix / mix.sum()
    else:
        weight = _cluster_weights(word_embeddings.detach().float().cpu(), keywords, num_tokens, seed)
    mapping.weight.copy_(weight.to(mapping.weight.dtype))
    mapping.bias.zero_()


def _cluster_weights(embeddings: torch.Tensor, keywords: torch.Tensor, num_tokens: int, seed: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    unit = nn.functional.normalize(embeddings, dim=-1)  # [V, d]
    closeness = (unit @ unit[keywords].T).amax(dim=-1)  # each word's cosine similarity to its nearest keyword
    neighbourhood = closeness.topk(min(len(unit), 10 * num_tokens)).indices
    if len(neighbourhood) < num_tokens:
        raise ValueError(f"--vocab_init_method cluster: the vocabulary has {len(unit)} words, fewer than --num_tokens {num_tokens}")
    kmeans = KMeans(n_clusters=num_tokens, n_init=1, max_iter=50, random_state=seed).fit(unit[neighbourhood].numpy())
    centres = nn.functional.normalize(torch.as_tensor(np.asarray(kmeans.cluster_centers_), dtype=torch.float32), dim=-1)
    return torch.softmax(centres @ unit.T / 0.05, dim=-1)  # [num_tokens, V]
