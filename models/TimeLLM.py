"""Time-LLM (Jin et al., "Time-LLM: Time Series Forecasting by Reprogramming Large Language Models",
ICLR 2024, https://arxiv.org/abs/2310.01728).

    x_enc [B, T, N] --RevIN--> series [B*N, T] --> prompt tokens (statistics of each series)
                                              \\--> patches [B*N, P, d_model] --reprogramming--> [B*N, P, d_llm]
    [prompt embeddings ; reprogrammed patches] --frozen LLM--> last P positions, first d_ff features
    --> flatten head [B, N, pred_len] --> RevIN denorm --> [B, pred_len, N]

Only the patch embedding, the mapping layer (text prototypes), the reprogramming layer and the head
are trained; the LLM is frozen and left out of checkpoints (`frozen_prefixes`). With `--use_lora 1`
LoRA adapters on the LLM's attention projections train too (QLoRA with `--load_in_4bit`); the
checkpoint then holds the adapters but still no base weights, and `python -m utils.export_merged`
folds them into the weights.

Corrected behaviours, each with a flag restoring upstream's for exact reproduction:
  --prompt_attention_mask 1  prompts are left-padded and masked, with positions counted from the
                             first real token, so a series' forecast does not depend on how long
                             its batch-mates' prompts are (upstream: no mask).
  --lag_method corrected     see utils/prompt.py.
Speed (outputs equal to the straightforward path within float tolerance; `--reference_path 1` keeps
that path for comparison, see scripts/benchmark.py): prompt ids assembled from pre-tokenised pieces,
text prototypes computed once per evaluation pass and per optimizer step, SDPA attention (the
reference path uses eager attention, which materialises the attention maps), and for causal frozen
backbones the shared prompt prefix run through the LLM once and reused as a key/value cache, and the
last layer's MLP run only on the patch positions the head reads.
Options that change the numbers, off by default: `--prompt_digits`, `--mapping_rank`.

Add-on modules, each off by default (`run_main_enhanced.py` turns TAPR and GRA-M on):
  --use_wavelet 1  layers/WaveletEmbed.py: patches of a stationary wavelet transform replace the raw
                   patches (same [B*N, P, d_model]); learnable filters add a reconstruction loss.
  --use_tapr 1  layers/TAPR.py: multi-scale routing of the patches, a trend token, a coarse-to-fine
                trend head trained on the true future's trend class, and (--c2f_fusion) its slope
                added to the forecast, identically in training and evaluation.
  --use_gram 1  layers/GRAM.py: similar training windows retrieved from a memory built on the training
                split, gated into the patches, and 2 retrieval tokens.
  LLM input = [trend (1), retrieval (2), prompt, patches]; per-series tokens ahead of the prompt
  rule out the shared-prefix cache, so these runs use the plain masked path.

`--llm_ablation` (layers/LLMAblations.py, where each definition and its source are written out):
  random_init             same architecture, untrained, frozen
  no_llm, llm2attn, llm2trsf   Tan et al. (NeurIPS 2024): the LLM, the prompt, the text prototypes
                          and the reprogramming removed; patches -> nothing / one attention layer /
                          one transformer layer at d_model -> linear head. No LLM is loaded.
  *_keep_prompt           only the LLM replaced, at its width; prompt and reprogramming stay.
"""
import os

import torch
from torch import nn
from transformers import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer

from layers.DynamicPrompt import DynamicPrompt
from layers.Embed import PatchEmbedding
from layers.FrequencyDecomposition import FrequencyPatchEmbedding
from layers.GRAM import GRAM
from layers.InterVariateAttention import InterVariateAttention
from layers.LLMAblations import KEEP_PROMPT_ABLATIONS, TAN_ABLATIONS, SequenceStandIn, TanAblation
from layers.MultiScaleEmbed import MultiScalePatchEmbedding
from layers.Reprogramming import FlattenHead, ReprogrammingLayer, TextPrototypes
from layers.StandardNorm import Normalize
from layers.TAPR import TAPR
from layers.TimeSeriesMoE import TimeSeriesMoE
from layers.WaveletEmbed import WaveletPatchEmbedding
from models import ForecastOutput
from models.traditional.hybrid import HybridForecaster
from utils.llm_loader import LoraSettings, load_llm
from utils.prompt import PromptBuilder, read_description
from utils.vocab_init import adaptive_num_tokens, initialise_mapping

LLM_ABLATIONS = ("none", "random_init", *TAN_ABLATIONS, *KEEP_PROMPT_ABLATIONS)


class Model(nn.Module):
    frozen_prefixes = ("llm",)

    def __init__(self, config):
        super().__init__()
        if config.llm_ablation not in LLM_ABLATIONS:
            raise ValueError(f"--llm_ablation must be one of {LLM_ABLATIONS}, got {config.llm_ablation!r}")
        self.ablation = config.llm_ablation
        # Tan et al.'s ablations keep none of Time-LLM's LLM side: no LLM is loaded at all.
        self.tan_ablation = TanAblation(config) if self.ablation in TAN_ABLATIONS else None
        if self.tan_ablation is not None:
            return
        self.pred_len, self.d_ff = config.pred_len, config.d_ff
        self.use_attention_mask = bool(config.prompt_attention_mask)
        self.reference_path = bool(config.reference_path)
        self.gradient_checkpointing = bool(config.gradient_checkpointing)
        replaced = self.ablation in KEEP_PROMPT_ABLATIONS
        loaded = load_llm(
            config.llm_model,
            path=config.llm_model_path,
            # A replaced LLM only lends its embedding table: one layer is enough to load.
            layers=1 if replaced else config.llm_layers,
            dtype=config.llm_dtype,
            load_in_4bit=config.load_in_4bit,
            random_init=self.ablation == "random_init",
            gradient_checkpointing=bool(config.gradient_checkpointing),
            cache_dir=config.llm_cache_dir,
            attention="eager" if self.reference_path else "sdpa",
            lora=LoraSettings(config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules) if config.use_lora else None,
        )
        self.use_lora = bool(config.use_lora)
        if config.llm_dim is not None and config.llm_dim != loaded.hidden_size:
            raise ValueError(f"--llm_dim {config.llm_dim} disagrees with {config.llm_model}'s hidden size {loaded.hidden_size}; leave it out")
        config.llm_dim = d_llm = loaded.hidden_size
        if config.d_ff > d_llm:
            raise ValueError(f"--d_ff ({config.d_ff}) must not exceed the LLM hidden size ({d_llm}): the head reads the first d_ff features")
        self.llm = loaded.model
        self.tokenizer_padding_side = "left" if self.use_attention_mask else loaded.default_padding_side
        self.prompt = PromptBuilder(
            loaded.tokenizer, read_description(config.prompt_name, config.content, config.prompt_domain), config.seq_len, config.pred_len,
            config.lag_method, config.prompt_digits,
        )
        self.tapr = TAPR(config, d_llm) if config.use_tapr else None
        self.gram = GRAM(config, d_llm) if config.use_gram else None
        self.uses_window_positions = self.gram is not None  # retrieval excludes overlapping windows
        # The prefix key/value cache needs a causal, frozen LLM (LoRA adapters change its keys and
        # values every step) that keeps the cache (checkpointed layers drop it), the masked prompt
        # layout, and the prompt first in the input.
        self.use_prefix_cache = (
            loaded.is_causal and self.ablation in ("none", "random_init") and self.use_attention_mask and not self.use_lora
            and not self.reference_path and not self.gradient_checkpointing and self.prompt.prefix_length > 0
            and self.tapr is None and self.gram is None
        )
        self._prefix_cache = None  # ((device, dtype), [(keys, values) per layer]), never saved
        self.sequence_model = SequenceStandIn(self.ablation, d_llm, config.n_heads) if replaced else None

        self.normalize = Normalize(config.enc_in, affine=False)
        if config.use_wavelet:
            self.patch_embedding = WaveletPatchEmbedding(config)
        elif config.use_multiscale:
            self.patch_embedding = MultiScalePatchEmbedding(config)
        elif config.use_frequency:
            self.patch_embedding = FrequencyPatchEmbedding(config)
        else:
            self.patch_embedding = PatchEmbedding(config.d_model, config.patch_len, config.stride, config.dropout)
        self.dynamic_prompt = DynamicPrompt(config, d_llm) if config.use_dynamic_prompt else None
        self.inter_variate = InterVariateAttention(config, d_llm) if config.use_inter_variate else None
        self.moe = TimeSeriesMoE(config, d_llm) if config.use_moe else None
        self.hybrid = HybridForecaster(config) if config.use_hybrid else None
        self.patch_count = PatchEmbedding.patch_count(config.seq_len, config.patch_len, config.stride)
        word_embeddings = self.llm.get_input_embeddings().weight
        if config.use_adaptive_vocab:  # recorded in the configuration, so checkpoints reload with the same size
            config.num_tokens = adaptive_num_tokens(config.seq_len, config.pred_len, config.enc_in)
        self.text_prototypes = TextPrototypes(word_embeddings.shape[0], config.num_tokens, config.mapping_rank)
        if config.use_keyword_init:
            initialise_mapping(self.text_prototypes.mapping, word_embeddings, loaded.tokenizer, config.vocab_init_method, config.seed)
        # Once per optimizer step under gradient accumulation; not with several processes (see TextPrototypes).
        self.text_prototypes.defer_gradients = config.gradient_accumulation_steps > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1
        self.reprogramming = ReprogrammingLayer(config.d_model, config.n_heads, config.d_ff, d_llm, config.dropout)
        self.head = FlattenHead(config.d_ff * self.patch_count, config.pred_len, config.dropout)
        if self.use_prefix_cache:
            self._skip_unread_positions_in_last_layer()

    @property
    def aux_loss_weights(self) -> dict:
        """The weights every submodule declares for the auxiliary losses it returns: an add-on lists its
        own, none is listed here (the trainer refuses an auxiliary loss without a weight)."""
        return {
            name: weight for module in self.modules() if module is not self for name, weight in getattr(module, "aux_loss_weights", {}).items()
        }

    def _skip_unread_positions_in_last_layer(self) -> None:
        """Run the last decoder layer's position-wise MLP on the patch positions only.

        After the last layer only a position-wise norm follows, and the head reads the last
        `patch_count` positions, so the MLP output elsewhere is never used: zeros stand in for it.
        Keys and values of every position come before the MLP, so the prefix cache is unaffected.
        The instance's forward is replaced (not the module) so state_dict names stay the LLM's own.
        Decoder-only LLaMA/Qwen2 (`layers`) and GPT-2 (`h`) families.
        """
        layers = getattr(self.llm, "layers", None) or getattr(self.llm, "h", None)
        mlp = getattr(layers[-1], "mlp", None) if layers is not None else None
        if not isinstance(mlp, nn.Module):
            return
        full_forward, keep = mlp.forward, self.patch_count

        def forward_read_positions(hidden: torch.Tensor) -> torch.Tensor:
            output = torch.zeros_like(hidden)
            output[:, -keep:] = full_forward(hidden[:, -keep:].contiguous())
            return output

        mlp.forward = forward_read_positions

    def train(self, mode: bool = True) -> "Model":
        super().train(mode)
        if self.tan_ablation is not None:
            return self
        self.llm.eval()  # frozen: its dropout stays off in training too
        if self.use_lora:  # the adapters train: their dropout follows the mode
            for name, module in self.llm.named_modules():
                if name.endswith("lora_dropout"):
                    module.train(mode)
        if mode and self.gradient_checkpointing:
            # Checkpointed layers only recompute in training mode; their dropouts stay off.
            for module in self.llm.modules():
                if isinstance(module, GradientCheckpointingLayer):
                    module.training = True
        return self

    def prefix_key_values(self, device: torch.device, dtype: torch.dtype) -> list:
        """Keys and values [1, heads, L_prefix, head_dim] of every layer for the shared prompt prefix,
        computed once per device and dtype (the frozen LLM and the prefix text never change)."""
        if self._prefix_cache is None or self._prefix_cache[0] != (device, dtype):
            ids = torch.tensor([self.prompt.prefix_ids], device=device)
            embeddings = self.llm.get_input_embeddings()(ids).to(dtype)
            with torch.no_grad():
                output = self.llm(inputs_embeds=embeddings, use_cache=True)
            layers = [(layer.keys, layer.values) for layer in output.past_key_values.layers]
            self._prefix_cache = ((device, dtype), layers)
        return self._prefix_cache[1]

    def run_backbone(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[S, L, d_llm] with mask [S, L] (1 = real token) -> hidden states [S, L', d_llm], where L' = L,
        or L minus the shared prefix when the prefix comes from the key/value cache."""
        if self.sequence_model is not None:
            return self.sequence_model(embeddings, attention_mask == 0)
        if not self.use_attention_mask:  # upstream: padding is attended to
            return self.llm(inputs_embeds=embeddings).last_hidden_state
        # Positions count from each row's first real token, so padding does not shift them.
        position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp_min(0)
        if not self.use_prefix_cache:
            return self.llm(inputs_embeds=embeddings, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        prefix = self.prompt.prefix_length
        series = embeddings.shape[0]
        cached = self.prefix_key_values(embeddings.device, embeddings.dtype)
        past = DynamicCache(ddp_cache_data=[(k.expand(series, -1, -1, -1), v.expand(series, -1, -1, -1)) for k, v in cached])
        return self.llm(
            inputs_embeds=embeddings[:, prefix:], attention_mask=attention_mask, position_ids=position_ids[:, prefix:],
            past_key_values=past, use_cache=True,
        ).last_hidden_state

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None, window_position=None):
        """x_enc [B, T, N] (window_position [B, 2], used by retrieval) -> forecast [B, pred_len, N], or a
        ForecastOutput with the add-on modules' auxiliary losses when TAPR or GRA-M is on."""
        if self.tan_ablation is not None:
            return self.tan_ablation(x_enc)
        batch, length, n_vars = x_enc.shape
        raw_input = x_enc  # data units, for the statistical forecasts of the hybrid
        x_enc = self.normalize(x_enc, "norm")
        series = x_enc.permute(0, 2, 1).reshape(batch * n_vars, length)  # [B*N, T]
        # Each series' RevIN statistics [B*N]; the forecast and its true future live in these units.
        center, stdev = (value.permute(0, 2, 1).reshape(batch * n_vars) for value in (self.normalize.center, self.normalize.stdev))

        word_embeddings = self.llm.get_input_embeddings().weight  # [V, d_llm]
        if self.reference_path or not self.use_attention_mask:
            # Whole strings every step; the unmasked upstream mode needs the tokenizer's own padding.
            prompt_ids, prompt_mask = self.prompt.encode_texts(series, self.tokenizer_padding_side)
        else:
            prompt_ids, prompt_mask = self.prompt.encode(series)
        prompt_embeddings = word_embeddings[prompt_ids]  # [B*N, L_prompt, d_llm]

        patches, _ = self.patch_embedding(x_enc.permute(0, 2, 1))  # [B*N, P, d_model]
        aux_losses, diagnostics, supervised_terms = {}, {}, None  # what the add-on modules return besides the forecast
        if isinstance(self.patch_embedding, WaveletPatchEmbedding):
            aux_losses.update(self.patch_embedding.aux_losses())
        if isinstance(self.patch_embedding, FrequencyPatchEmbedding):
            diagnostics.update(self.patch_embedding.diagnostics())
        leading = []  # per-series tokens ahead of the prompt: trend [B*N, 1, d_llm], retrieval [B*N, 2, d_llm]
        trend = None
        if self.tapr is not None:
            patches, trend = self.tapr(patches)
            leading.append(trend.token)
        if self.gram is not None:
            positions = None if window_position is None else window_position.repeat_interleave(n_vars, dim=0)
            retrieval = self.gram(patches, series, center, stdev, positions)
            patches = retrieval.patches
            leading.append(retrieval.tokens)
            aux_losses.update(retrieval.aux_losses)
            diagnostics.update(retrieval.diagnostics)

        if self.reference_path:
            prototypes = self.text_prototypes(word_embeddings)  # [num_tokens, d_llm], every forward
        else:
            prototypes = self.text_prototypes.cached(word_embeddings)
        reprogrammed = self.reprogramming(patches, prototypes)  # [B*N, P, d_llm]
        if self.inter_variate is not None:
            reprogrammed = self.inter_variate(reprogrammed, n_vars)
        if self.moe is not None:
            reprogrammed, moe_losses, moe_usage = self.moe(reprogrammed)
            aux_losses.update(moe_losses)
            diagnostics.update(moe_usage)

        leading = [token.to(reprogrammed.dtype) for token in leading]
        # Per-series tokens after the prompt: [dynamic prompt (K + segments)]; the shared prefix stays first.
        trailing = [] if self.dynamic_prompt is None else [self.dynamic_prompt(series).to(reprogrammed.dtype)]
        embeddings = torch.cat([*leading, prompt_embeddings.to(reprogrammed.dtype), *trailing, reprogrammed], dim=1)
        lead_length = sum(token.shape[1] for token in leading)
        trail_length = sum(token.shape[1] for token in trailing)
        attention_mask = torch.cat([
            prompt_mask.new_ones(batch * n_vars, lead_length), prompt_mask, prompt_mask.new_ones(batch * n_vars, trail_length + self.patch_count)
        ], dim=1)
        hidden = self.run_backbone(embeddings.to(self.backbone_dtype), attention_mask)  # [B*N, L_lead + L_prompt + P, d_llm]

        hidden = hidden[:, -self.patch_count :, : self.d_ff].float()  # [B*N, P, d_ff]
        hidden = hidden.reshape(batch, n_vars, self.patch_count, self.d_ff).permute(0, 1, 3, 2)  # [B, N, d_ff, P]
        forecast = self.head(hidden)  # [B, N, pred_len]
        if trend is not None:
            forecast = self.tapr.fuse(forecast.reshape(batch * n_vars, -1), trend).reshape(batch, n_vars, -1)
            supervised_terms = lambda future: self.tapr.losses(trend, self._normalised_future(future, center, stdev))
        prediction = self.normalize(forecast.permute(0, 2, 1), "denorm")  # [B, pred_len, N]
        if self.hybrid is not None:  # fused in data units, where the statistical models forecast
            prediction, weights = self.hybrid(raw_input, prediction)
            diagnostics.update(weights)
        if not (aux_losses or diagnostics or supervised_terms):
            return prediction
        return ForecastOutput(prediction, aux_losses, diagnostics, supervised_terms)

    @staticmethod
    def _normalised_future(future: torch.Tensor, center: torch.Tensor, stdev: torch.Tensor) -> torch.Tensor:
        """True future [B, H, N] -> per series [B*N, H] in the series' RevIN units."""
        per_series = future.permute(0, 2, 1).reshape(center.shape[0], -1)
        return (per_series - center.unsqueeze(1)) / stdev.unsqueeze(1)

    @property
    def backbone_dtype(self) -> torch.dtype:
        if self.sequence_model is not None:
            return self.text_prototypes.mapping.weight.dtype
        return self.llm.get_input_embeddings().weight.dtype
