"""Time-LLM (Jin et al., "Time-LLM: Time Series Forecasting by Reprogramming Large Language Models",
ICLR 2024, https://arxiv.org/abs/2310.01728).

    x_enc [B, T, N] --RevIN--> series [B*N, T] --> prompt tokens (statistics of each series)
                                              \\--> patches [B*N, P, d_model] --reprogramming--> [B*N, P, d_llm]
    [prompt embeddings ; reprogrammed patches] --frozen LLM--> last P positions, first llm_features features
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
import torch
from torch import nn

from layers.AddOn import SeriesContext, Stage, StageRecord
from layers.Backbone import BackboneRunner, prefix_cache_applies
from layers.Embed import PatchEmbedding, StandardPatchEmbedding
from layers.Head import FlattenHead
from layers.LLMAblations import KEEP_PROMPT_ABLATIONS, TAN_ABLATIONS, SequenceStandIn, TanAblation
from layers.registry import build_addons
from layers.Reprogramming import ReprogrammingLayer, TextPrototypes
from layers.StandardNorm import Normalize
from models import ForecastOutput
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
        # --d_keys and --llm_features: both --d_ff unless given, as upstream (utils/settings/llm.py).
        self.pred_len, self.llm_features = config.pred_len, config.llm_features
        self.use_attention_mask = bool(config.prompt_attention_mask)
        self.reference_path = bool(config.reference_path)
        self.gradient_checkpointing = bool(config.gradient_checkpointing)
        self.use_lora = bool(config.use_lora)
        replaced = self.ablation in KEEP_PROMPT_ABLATIONS
        loaded = load_llm(
            config.llm_model,
            path=config.llm_model_path,
            # A replaced LLM only lends its embedding table: one layer is enough to load.
            layers=1 if replaced else config.llm_layers,
            dtype=config.llm_dtype,
            load_in_4bit=config.load_in_4bit,
            random_init=self.ablation == "random_init",
            gradient_checkpointing=self.gradient_checkpointing,
            cache_dir=config.llm_cache_dir,
            # The clip penalty differentiates gradients, and the fused attention kernels have no double backward.
            attention="eager" if self.reference_path or getattr(config, "lambda_clip", 0) > 0 else "sdpa",
            lora=LoraSettings(config.lora_r, config.lora_alpha, config.lora_dropout, config.lora_target_modules) if config.use_lora else None,
        )
        if config.llm_dim is not None and config.llm_dim != loaded.hidden_size:
            raise ValueError(f"--llm_dim {config.llm_dim} disagrees with {config.llm_model}'s hidden size {loaded.hidden_size}; leave it out")
        config.llm_dim = d_llm = loaded.hidden_size  # add-ons after the reprogramming work at this width
        if config.llm_features > d_llm:
            raise ValueError(f"--llm_features ({config.llm_features}, default --d_ff) must not exceed the LLM hidden size ({d_llm}): the head reads that many of its features")
        self.llm = loaded.model
        self.tokenizer_padding_side = "left" if self.use_attention_mask else loaded.default_padding_side
        self.prompt = PromptBuilder(
            loaded.tokenizer, read_description(config.prompt_name, config.content, config.prompt_domain), config.seq_len, config.pred_len,
            config.lag_method, config.prompt_digits,
        )
        # Built in this order so that a seed draws the same initial weights as before the add-on
        # protocol (tests/test_golden.py).
        addons = build_addons(config, Stage.PATCHES)
        self.sequence_model = SequenceStandIn(self.ablation, d_llm, config.n_heads) if replaced else None
        self.normalize = Normalize(config.enc_in, affine=False)
        # The patch embedding stage always has one module: an add-on's, else Time-LLM's own.
        self.patch_embedding = build_addons(config, Stage.PATCH_EMBEDDING).get("patch_embedding") or StandardPatchEmbedding(config)
        addons.update(build_addons(config, Stage.PROMPT_TOKENS, Stage.REPROGRAMMED, Stage.FORECAST))
        for name, module in addons.items():  # held under their registry names: checkpoint keys
            setattr(self, name, module)
        self.addon_names = list(addons)
        self.batch_fields = tuple(dict.fromkeys(name for module in addons.values() for name in module.batch_fields))
        self.patch_count = PatchEmbedding.patch_count(config.seq_len, config.patch_len, config.stride)
        word_embeddings = self.llm.get_input_embeddings().weight
        if config.use_adaptive_vocab:  # recorded in the configuration, so checkpoints reload with the same size
            config.num_tokens = adaptive_num_tokens(config.seq_len, config.pred_len, config.enc_in, config.base_num_tokens)
        self.text_prototypes = TextPrototypes(word_embeddings.shape[0], config.num_tokens, config.mapping_rank)
        if config.use_keyword_init:
            initialise_mapping(self.text_prototypes.mapping, word_embeddings, loaded.tokenizer, config.vocab_init_method, config.seed)
        self.reprogramming = ReprogrammingLayer(config.d_model, config.n_heads, config.d_keys, d_llm, config.dropout)
        self.head = FlattenHead(config.llm_features * self.patch_count, config.pred_len, config.dropout)
        tokens_ahead = any(module.emits_tokens for module in addons.values())
        use_cache = prefix_cache_applies(config, loaded.is_causal, self.prompt.prefix_length, tokens_ahead)
        self.backbone = BackboneRunner(
            self.llm, self.sequence_model, self.use_attention_mask, self.prompt.prefix_ids if use_cache else None, self.patch_count
        )

    @property
    def aux_loss_weights(self) -> dict:
        """The weights every submodule declares for the auxiliary losses it returns: an add-on lists its
        own, none is listed here (the trainer refuses an auxiliary loss without a weight)."""
        return {
            name: weight for module in self.modules() if module is not self for name, weight in getattr(module, "aux_loss_weights", {}).items()
        }

    def train(self, mode: bool = True) -> "Model":
        super().train(mode)
        if self.tan_ablation is None:
            self.backbone.set_mode(mode, self.use_lora, self.gradient_checkpointing)
        return self

    def addons_at(self, stage: Stage) -> list:
        return [module for module in (getattr(self, name) for name in self.addon_names) if module.stage is stage]

    def forward(self, x_enc: torch.Tensor, x_mark_enc=None, x_dec=None, x_mark_dec=None, **batch_extras) -> ForecastOutput:
        """x_enc [B, T, N], and the batch fields the add-ons ask for (`batch_fields`: window_position
        [B, 2] for retrieval, the hybrid's statistical forecasts) -> ForecastOutput: forecast
        [B, pred_len, N], with the add-ons' auxiliary losses, diagnostics and supervised terms."""
        if self.tan_ablation is not None:
            return ForecastOutput(self.tan_ablation(x_enc))
        record = StageRecord()
        context = SeriesContext.from_input(x_enc, self.normalize, batch_extras)  # normalise
        prompt_embeddings, prompt_mask = self.prompt_stage(context.series)
        per_variable = context.series.reshape(context.batch, context.n_vars, -1)  # [B, N, T]
        patches = record.absorb(self.patch_embedding(per_variable, context))  # [B*N, P, d_model]
        for addon in self.addons_at(Stage.PATCHES):
            patches = record.absorb(addon(patches, context))
        reprogrammed = self.reprogram(patches)  # [B*N, P, d_llm]
        for addon in self.addons_at(Stage.PROMPT_TOKENS):
            record.trailing_tokens.append(record.absorb(addon(context.series, context)))
        for addon in self.addons_at(Stage.REPROGRAMMED):
            reprogrammed = record.absorb(addon(reprogrammed, context))
        hidden = self.backbone_stage(record, prompt_embeddings, prompt_mask, reprogrammed)  # [B*N, P, llm_features]
        forecast = self.head(hidden.reshape(context.batch, context.n_vars, self.patch_count, self.llm_features).permute(0, 1, 3, 2))
        forecast = forecast.reshape(context.batch * context.n_vars, -1)  # [B*N, pred_len]
        for adjust in record.forecast_adjustments:
            forecast = adjust(forecast)
        prediction = self.normalize(forecast.reshape(context.batch, context.n_vars, -1).permute(0, 2, 1), "denorm")  # [B, pred_len, N]
        for addon in self.addons_at(Stage.FORECAST):  # in data units, where the statistical models forecast
            prediction = record.absorb(addon(prediction, context))
        return ForecastOutput(prediction, record.aux_losses, record.diagnostics, record.supervised(context))

    # ------------------------------------------------------------------------------------ stages
    def prompt_stage(self, series: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """series [B*N, T] -> prompt embeddings [B*N, L_prompt, d_llm] and their mask [B*N, L_prompt]."""
        if self.reference_path or not self.use_attention_mask:
            # Whole strings every step; the unmasked upstream mode needs the tokenizer's own padding.
            prompt_ids, prompt_mask = self.prompt.encode_texts(series, self.tokenizer_padding_side)
        else:
            prompt_ids, prompt_mask = self.prompt.encode(series)
        return self.llm.get_input_embeddings().weight[prompt_ids], prompt_mask

    def reprogram(self, patches: torch.Tensor) -> torch.Tensor:
        """patches [B*N, P, d_model] -> [B*N, P, d_llm], attending over the text prototypes."""
        word_embeddings = self.llm.get_input_embeddings().weight  # [V, d_llm]
        if self.reference_path:
            prototypes = self.text_prototypes(word_embeddings)  # [num_tokens, d_llm], every forward
        else:
            prototypes = self.text_prototypes.cached(word_embeddings)
        return self.reprogramming(patches, prototypes)

    def backbone_stage(self, record: StageRecord, prompt_embeddings, prompt_mask, reprogrammed) -> torch.Tensor:
        """LLM input [leading tokens, prompt, trailing tokens, reprogrammed patches] -> the first llm_features
        features of the patch positions [B*N, P, llm_features] (float32)."""
        dtype = reprogrammed.dtype
        leading = [token.to(dtype) for token in record.leading_tokens]  # trend [B*N, 1, d_llm], retrieval [B*N, 2, d_llm]
        trailing = [token.to(dtype) for token in record.trailing_tokens]  # dynamic prompt [B*N, K + segments, d_llm]
        embeddings = torch.cat([*leading, prompt_embeddings.to(dtype), *trailing, reprogrammed], dim=1)
        series = reprogrammed.shape[0]
        lead_length = sum(token.shape[1] for token in leading)
        trail_length = sum(token.shape[1] for token in trailing)
        attention_mask = torch.cat([
            prompt_mask.new_ones(series, lead_length), prompt_mask, prompt_mask.new_ones(series, trail_length + self.patch_count)
        ], dim=1)
        hidden = self.backbone(embeddings.to(self.backbone_dtype), attention_mask)  # [B*N, L_lead + L_prompt + L_trail + P, d_llm]
        return hidden[:, -self.patch_count :, : self.llm_features].float()

    @property
    def backbone_dtype(self) -> torch.dtype:
        """The LLM's dtype; an ablation's stand-in computes in the trained modules' dtype."""
        if self.sequence_model is not None:
            return self.text_prototypes.mapping.weight.dtype
        return self.llm.get_input_embeddings().weight.dtype
