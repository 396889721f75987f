"""GRA-M, retrieval-augmented memory (the enhanced Time-LLM, `--use_gram 1`).

    RetrievalMemory          training windows held as buffers (so checkpoints carry them):
                             normalised inputs [M, T], their normalised futures [M, H], value
                             statistics [M, 4], fixed search keys [M, F], positions [M, 2]
    PatternValueDualRetriever (GRA-M-PVDR)
        query series [S, T] -> top-k candidates [S, k] found on the fixed keys, then weighted by a
        learned score: a small transformer (CLS token) over the window's shape and an MLP over its
        value statistics, mixed by a learned shape/value weight, softmax at `--retrieval_temperature`
    AdaptiveKnowledgeGating (GRA-M-AKG)
        patches [S, P, d_model] + retrieved futures [S, k, H] -> patches + (1 - gate) * cross-attention
        to the retrieved experience; gate -> 1 keeps the current reasoning, -> 0 leans on memory.
    GRAM.forward -> AddOnOutput: fused patches [S, P, d_model], 2 LLM tokens [S, 2, d_llm] ahead of
        the prompt (retrieved context, confidence), and the gate's auxiliary losses.

Keys and encoders. Candidates are searched on fixed features (the normalised window average-pooled to
16 points, and its statistics), and the learned encoders re-score the k candidates from the raw
windows the memory stores, every forward pass. So the keys can never go stale as the encoders learn
(no re-encoding schedule to get wrong), and the learned shape/value weight and temperature act on
scores computed by the current weights, which is what gives them gradients.

Leakage. The memory is built from the training split only (`build` refuses another split), and holds
at most `--max_memory_size` windows, evenly spaced over the split. Validation and test windows lie
after the training rows, so every memory window ends before a test query's horizon starts. Training
queries are training windows, and `--gram_retrieval` decides what they may see (in any variable:
another variable at the same time is the same future seen from the side):
    causal (default)  only memory windows whose future ends before the query's horizon starts, the
                      condition every test query meets, so training retrieves as testing does
    non_overlapping   every memory window whose rows (input or future) miss the query's horizon,
                      windows after it included: what a test query can never retrieve
Early training queries have few causal candidates (the first none: they get zero retrieval weights).

Auxiliary losses (both >= 0): gate entropy log 2 - H(mean gate) keeps the batch from collapsing onto
one side; gate consistency mean(confidence * H(gate)) asks for a decisive gate where retrieval is
confident. H is the binary entropy in nats.
"""
import math
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from utils.settings.addons import PATTERN_HEADS, GRAMConfig

SEARCH_POINTS = 16  # the normalised window is average-pooled to this many points for the search key
STATISTICS = 4  # mean, log std (scaled units), last value and slope (normalised units)
EPS = 1e-5  # as RevIN


def window_statistics(normalised: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """normalised windows [S, T], their mean and std [S] -> statistics [S, 4]."""
    steps = torch.arange(normalised.shape[-1], dtype=normalised.dtype, device=normalised.device)
    centred = steps - steps.mean()
    slope = (normalised * centred).sum(dim=-1) / (centred**2).sum()
    return torch.stack([mean, std.log(), normalised[:, -1], slope * normalised.shape[-1]], dim=-1)


def search_keys(normalised: torch.Tensor, statistics: torch.Tensor) -> torch.Tensor:
    """[S, T], [S, 4] -> fixed search features [S, SEARCH_POINTS + 4]; each half weighs equally in
    the squared Euclidean distance (mean squared difference of shape + of statistics)."""
    points = min(SEARCH_POINTS, normalised.shape[-1])
    shape = F.adaptive_avg_pool1d(normalised.unsqueeze(1), points).squeeze(1)
    return torch.cat([shape / math.sqrt(points), statistics / math.sqrt(STATISTICS)], dim=-1)


class RetrievalMemory(nn.Module):
    """Training windows as buffers; empty until `build` or a checkpoint fills it."""

    def __init__(self, seq_len: int, pred_len: int, max_size: int):
        super().__init__()
        if max_size <= 0:
            raise ValueError(f"--max_memory_size must be positive, got {max_size}")
        self.seq_len, self.pred_len, self.max_size = seq_len, pred_len, max_size
        points = min(SEARCH_POINTS, seq_len)
        self.register_buffer("inputs", torch.zeros(0, seq_len))
        self.register_buffer("futures", torch.zeros(0, pred_len))
        self.register_buffer("statistics", torch.zeros(0, STATISTICS))
        self.register_buffer("keys", torch.zeros(0, points + STATISTICS))
        self.register_buffer("positions", torch.zeros(0, 2, dtype=torch.long))  # (series, first row)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @torch.no_grad()
    def build(self, dataset) -> None:
        """Fill from a sliding-window training dataset: every variable of evenly spaced windows."""
        if getattr(dataset, "split", None) != "train" or not hasattr(dataset, "windows_per_channel"):
            raise ValueError("--use_gram: the memory is built from a sliding-window training split (ETT or custom CSV data)")
        values = torch.as_tensor(np.ascontiguousarray(dataset.data.T), dtype=torch.float32)  # [C, rows]
        per_channel = dataset.windows_per_channel
        total = values.shape[0] * per_channel
        chosen = torch.linspace(0, total - 1, min(total, self.max_size)).round().long().unique()
        channels, starts = chosen // per_channel, chosen % per_channel
        offsets = torch.arange(self.seq_len + self.pred_len)
        windows = values[channels.unsqueeze(1), starts.unsqueeze(1) + offsets]  # [M, T + H]
        inputs, futures = windows[:, : self.seq_len], windows[:, self.seq_len :]
        mean = inputs.mean(dim=1, keepdim=True)
        std = torch.sqrt(inputs.var(dim=1, keepdim=True, unbiased=False) + EPS)
        normalised = (inputs - mean) / std
        statistics = window_statistics(normalised, mean.squeeze(1), std.squeeze(1))
        rows = starts + dataset.first_row
        self._assign(
            inputs=normalised, futures=(futures - mean) / std, statistics=statistics,
            keys=search_keys(normalised, statistics), positions=torch.stack([torch.zeros_like(rows), rows], dim=1),
        )

    def _assign(self, **buffers: torch.Tensor) -> None:
        for name, value in buffers.items():
            current = getattr(self, name)
            setattr(self, name, value.to(device=current.device, dtype=current.dtype))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The memory's size is the checkpoint's: take its shapes before the copy.
        self._assign(**{name: state_dict[prefix + name] for name, _ in self.named_buffers() if prefix + name in state_dict})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def search(self, keys: torch.Tensor, positions: Optional[torch.Tensor], top_k: int, exclusion: Optional[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Query keys [S, F], positions [S, 2] (series, first input row) -> candidate indices [S, k]
        and eligibility [S, k]. Ineligible, for a query horizon [first + T, first + T + H): with
        exclusion "causal", memory windows that end after the horizon starts; with "non_overlapping",
        those whose rows meet the horizon; with None, none."""
        distances = torch.cdist(keys.float(), self.keys.float())  # [S, M]
        if exclusion is not None and positions is not None:
            query_start = positions[:, 1:2] + self.seq_len  # first forecast row [S, 1]
            memory_start = self.positions[:, 1].unsqueeze(0)  # [1, M]
            ends_after_start = memory_start + self.seq_len + self.pred_len > query_start  # [S, M]
            if exclusion == "causal":
                excluded = ends_after_start
            elif exclusion == "non_overlapping":
                excluded = ends_after_start & (memory_start < query_start + self.pred_len)
            else:
                raise ValueError(f"--gram_retrieval must be causal or non_overlapping, got {exclusion!r}")
            distances = distances.masked_fill(excluded, math.inf)
        distances, indices = distances.topk(top_k, dim=-1, largest=False)
        return indices, torch.isfinite(distances)


class PatternEncoder(nn.Module):
    """Normalised windows [R, T] -> shape representations [R, d_repr]: non-overlapping patches, a CLS
    token and one transformer encoder layer; the CLS output is the representation."""

    def __init__(self, seq_len: int, patch_len: int, d_repr: int, dropout: float):
        super().__init__()
        self.patch_len = min(patch_len, seq_len)
        count = math.ceil(seq_len / self.patch_len)
        self.padding = count * self.patch_len - seq_len
        self.embed = nn.Linear(self.patch_len, d_repr)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_repr))
        self.position = nn.Parameter(torch.randn(1, count + 1, d_repr) * 0.02)
        self.encoder = nn.TransformerEncoderLayer(d_repr, PATTERN_HEADS, 2 * d_repr, dropout, batch_first=True, norm_first=True)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        if self.padding:
            windows = F.pad(windows.unsqueeze(1), (0, self.padding), mode="replicate").squeeze(1)
        tokens = self.embed(windows.unflatten(-1, (-1, self.patch_len)))  # [R, count, d_repr]
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.position
        return self.encoder(tokens)[:, 0]


class PatternValueDualRetriever(nn.Module):
    def __init__(self, config: GRAMConfig):
        super().__init__()
        # d_repr, gram_top_k and the temperature are checked by GRAMConfig (utils/settings/addons.py).
        self.top_k, self.temperature = config.gram_top_k, config.retrieval_temperature
        self.training_exclusion = config.gram_retrieval  # what training queries may not retrieve
        self.memory = RetrievalMemory(config.seq_len, config.pred_len, config.max_memory_size)
        self.pattern_encoder = PatternEncoder(config.seq_len, config.patch_len, config.d_repr, config.dropout)
        self.value_encoder = nn.Sequential(nn.Linear(STATISTICS, config.d_repr), nn.GELU(), nn.Linear(config.d_repr, config.d_repr))
        self.shape_logit = nn.Parameter(torch.zeros(()))  # sigmoid: weight of shape against value similarity

    def forward(self, normalised: torch.Tensor, statistics: torch.Tensor, positions: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """normalised [S, T], statistics [S, 4], positions [S, 2] or None ->
        (retrieved futures [S, k, H], weights [S, k] summing to 1 or 0, similarity [S, k] in [-1, 1])."""
        if len(self.memory) < self.top_k:
            raise RuntimeError(
                f"GRA-M memory holds {len(self.memory)} windows, fewer than --top_k {self.top_k}: train with "
                "--build_memory 1, or load a checkpoint that holds a memory"
            )
        memory = self.memory
        indices, eligible = memory.search(search_keys(normalised, statistics), positions, self.top_k, self.training_exclusion if self.training else None)
        series, k = indices.shape
        windows = torch.cat([normalised, memory.inputs[indices].flatten(0, 1).to(normalised.dtype)])  # [S + S*k, T]
        values = torch.cat([statistics, memory.statistics[indices].flatten(0, 1).to(statistics.dtype)])
        shapes, magnitudes = self.pattern_encoder(windows), self.value_encoder(values)
        shape_similarity = F.cosine_similarity(shapes[:series].unsqueeze(1), shapes[series:].view(series, k, -1), dim=-1)
        value_similarity = F.cosine_similarity(magnitudes[:series].unsqueeze(1), magnitudes[series:].view(series, k, -1), dim=-1)
        shape_weight = torch.sigmoid(self.shape_logit)
        similarity = shape_weight * shape_similarity + (1 - shape_weight) * value_similarity  # [S, k]
        # A query with no eligible candidate (possible only on tiny data) gets all-zero weights; its
        # logits are set finite first so that neither the softmax nor its gradient holds NaN.
        any_eligible = eligible.any(dim=-1, keepdim=True)
        logits = (similarity / self.temperature).masked_fill(~eligible, -math.inf).masked_fill(~any_eligible, 0.0)
        weights = logits.softmax(dim=-1) * any_eligible
        return memory.futures[indices].to(normalised.dtype), weights, similarity


def binary_entropy(probability: torch.Tensor) -> torch.Tensor:
    probability = probability.clamp(1e-6, 1 - 1e-6)
    return -(probability * probability.log() + (1 - probability) * (1 - probability).log())


class AdaptiveKnowledgeGating(nn.Module):
    def __init__(self, d_model: int, pred_len: int, dropout: float):
        super().__init__()
        self.current_encoder = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU())
        self.retrieved_encoder = nn.Sequential(nn.Linear(pred_len, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.match_scale = 1 / math.sqrt(d_model)
        self.gate_network = nn.Sequential(nn.Linear(2 * d_model + 1, d_model), nn.GELU(), nn.Linear(d_model, 1))
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.output = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, patches: torch.Tensor, futures: torch.Tensor, weights: torch.Tensor, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """patches [S, P, d_model], retrieved futures [S, k, H], weights [S, k], confidence [S] ->
        (fused patches [S, P, d_model], retrieved summary [S, d_model], gate [S])."""
        current = self.current_encoder(patches.mean(dim=1))  # [S, d_model]
        retrieved = self.retrieved_encoder(futures)  # [S, k, d_model]
        # Match of each retrieved window to the current series, on top of the retrieval prior.
        match = torch.einsum("sd,skd->sk", current, retrieved) * self.match_scale
        # The retrieval weights as a log prior; rows without any retrieved window attend to nothing.
        retrieved_any = (weights > 0).any(dim=-1, keepdim=True)  # [S, 1]
        prior = weights.clamp_min(1e-30).log().masked_fill(weights == 0, -math.inf).masked_fill(~retrieved_any, 0.0)
        summary_weights = (match + prior).softmax(dim=-1) * retrieved_any  # [S, k]
        summary = torch.einsum("sk,skd->sd", summary_weights, retrieved)
        gate = torch.sigmoid(self.gate_network(torch.cat([current, summary, confidence.unsqueeze(-1)], dim=-1))).squeeze(-1)
        # Cross-attention of every patch to the retrieved windows, with the same retrieval prior.
        scores = torch.einsum("spd,skd->spk", self.query(patches), self.key(retrieved)) * self.match_scale
        attention = (scores + prior.unsqueeze(1)).softmax(dim=-1) * retrieved_any.unsqueeze(1)  # [S, P, k]
        attended = self.output(torch.einsum("spk,skd->spd", attention, self.value(retrieved)))
        fused = patches + (1 - gate)[:, None, None] * self.dropout(attended)
        return fused, summary, gate


class GRAM(AddOn):
    """The add-on `--use_gram 1` switches on, at the PATCHES stage.

    forward(patches [S, P, d_model]; the context's normalised series [S, T], RevIN mean and std [S],
        window positions) -> AddOnOutput (module docstring)
    prepare(datasets) fills the memory from the training split, when the run trains.
    """

    stage = Stage.PATCHES
    emits_tokens = True
    batch_fields = ("window_position",)  # retrieval excludes the memory windows a training query overlaps

    def __init__(self, config: GRAMConfig):
        super().__init__()
        d_llm = config.llm_dim
        self.build_on_fit = bool(config.build_memory)
        self.retriever = PatternValueDualRetriever(config)
        self.gating = AdaptiveKnowledgeGating(config.d_model, config.pred_len, config.dropout)
        self.context_to_llm = nn.Linear(config.d_model, d_llm)
        self.confidence_to_llm = nn.Linear(1, d_llm)
        self.aux_loss_weights = {"retrieval_gate_entropy": config.lambda_retrieval, "retrieval_gate_consistency": config.lambda_retrieval}

    def prepare(self, datasets: dict) -> None:
        """Before training; --build_memory 0 keeps the memory a checkpoint brought."""
        if self.build_on_fit and "train" in datasets:
            self.retriever.memory.build(datasets["train"])

    def forward(self, patches: torch.Tensor, context: SeriesContext) -> AddOnOutput:
        normalised = context.series
        statistics = window_statistics(normalised, context.center, context.stdev)
        futures, weights, similarity = self.retriever(normalised, statistics, context.series_positions)
        confidence = (0.5 * (1 + (weights * similarity).sum(dim=-1))) * (weights.sum(dim=-1) > 0)  # [S] in [0, 1]
        fused, summary, gate = self.gating(patches, futures, weights, confidence)
        tokens = torch.stack([self.context_to_llm(summary), self.confidence_to_llm(confidence.unsqueeze(-1))], dim=1)
        entropy = binary_entropy(gate)
        aux_losses = {
            "retrieval_gate_entropy": math.log(2) - binary_entropy(gate.mean()),
            "retrieval_gate_consistency": (confidence.detach() * entropy).mean(),
        }
        diagnostics = {"retrieval_gate_mean": gate.mean().detach(), "retrieval_confidence": confidence.mean().detach()}
        return AddOnOutput(fused, tokens=tokens, aux_losses=aux_losses, diagnostics=diagnostics)
