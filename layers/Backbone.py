"""Time-LLM's backbone stage: the LLM input [S, L, d_llm] with its mask [S, L] -> hidden states.

    embeddings [S, L, d_llm], mask [S, L] (1 = real token)
      --> frozen LLM (LoRA-tuned with --use_lora), or the stand-in of a `*_keep_prompt` ablation
      --> hidden states [S, L', d_llm]: L' = L, or L minus the shared prompt prefix when the prefix
          came from the key/value cache

Speed without changing the numbers (the cache applies to causal, frozen LLMs with the masked prompt
layout and the prompt first in the input; see `prefix_cache_applies`):
  - the shared prompt prefix runs through the LLM once per device and dtype and is reused as a
    key/value cache (the frozen LLM and the prefix text never change);
  - the last decoder layer's MLP runs only on the patch positions the head reads.

`BackboneRunner` is a plain object, not a module: the LLM and the stand-in stay the model's own
submodules (`llm`, `sequence_model`), so checkpoint names do not depend on this file.
"""
from typing import Optional

import torch
from torch import nn
from transformers import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer


def prefix_cache_applies(config, is_causal: bool, prefix_length: int, tokens_ahead_of_prompt: bool) -> bool:
    """The prefix key/value cache needs a causal, frozen LLM (LoRA adapters change its keys and values
    every step; ablation stand-ins are no LLM) that keeps the cache (checkpointed layers drop it), the
    masked prompt layout, and the prompt first in the input."""
    return (
        is_causal and config.llm_ablation in ("none", "random_init") and bool(config.prompt_attention_mask)
        and not config.use_lora and not config.reference_path and not config.gradient_checkpointing
        and prefix_length > 0 and not tokens_ahead_of_prompt
    )


class BackboneRunner:
    def __init__(self, llm: nn.Module, sequence_model: Optional[nn.Module], use_attention_mask: bool,
                 prefix_ids: Optional[list[int]], patch_count: int):
        """prefix_ids: the shared prompt prefix's token ids when the prefix cache applies, else None."""
        self.llm, self.sequence_model = llm, sequence_model
        self.use_attention_mask = use_attention_mask
        self.prefix_ids = prefix_ids
        self.use_prefix_cache = prefix_ids is not None
        self._prefix_cache = None  # ((device, dtype), [(keys, values) per layer]), never saved
        if self.use_prefix_cache:
            self._skip_unread_positions_in_last_layer(patch_count)

    def _skip_unread_positions_in_last_layer(self, keep: int) -> None:
        """Run the last decoder layer's position-wise MLP on the last `keep` (patch) positions only.

        After the last layer only a position-wise norm follows, and the head reads the last `keep`
        positions, so the MLP output elsewhere is never used: zeros stand in for it. Keys and values
        of every position come before the MLP, so the prefix cache is unaffected. The instance's
        forward is replaced (not the module) so state_dict names stay the LLM's own. Decoder-only
        LLaMA/Qwen2 (`layers`) and GPT-2 (`h`) families.
        """
        layers = getattr(self.llm, "layers", None) or getattr(self.llm, "h", None)
        mlp = getattr(layers[-1], "mlp", None) if layers is not None else None
        if not isinstance(mlp, nn.Module):
            return
        full_forward = mlp.forward

        def forward_read_positions(hidden: torch.Tensor) -> torch.Tensor:
            output = torch.zeros_like(hidden)
            output[:, -keep:] = full_forward(hidden[:, -keep:].contiguous())
            return output

        mlp.forward = forward_read_positions

    def set_mode(self, training: bool, lora: bool, gradient_checkpointing: bool) -> None:
        """The frozen LLM's dropout stays off in training too; LoRA adapters' dropout follows the mode;
        checkpointed layers only recompute in training mode, so they are marked training (their
        dropouts stay off)."""
        self.llm.eval()
        if lora:
            for name, module in self.llm.named_modules():
                if name.endswith("lora_dropout"):
                    module.train(training)
        if training and gradient_checkpointing:
            for module in self.llm.modules():
                if isinstance(module, GradientCheckpointingLayer):
                    module.training = True

    def prefix_key_values(self, device: torch.device, dtype: torch.dtype) -> list:
        """Keys and values [1, heads, L_prefix, head_dim] of every layer for the shared prompt prefix."""
        if self._prefix_cache is None or self._prefix_cache[0] != (device, dtype):
            ids = torch.tensor([self.prefix_ids], device=device)
            embeddings = self.llm.get_input_embeddings()(ids).to(dtype)
            with torch.no_grad():
                output = self.llm(inputs_embeds=embeddings, use_cache=True)
            layers = [(layer.keys, layer.values) for layer in output.past_key_values.layers]
            self._prefix_cache = ((device, dtype), layers)
        return self._prefix_cache[1]

    def __call__(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[S, L, d_llm] with mask [S, L] -> hidden states [S, L', d_llm] (module docstring)."""
        if self.sequence_model is not None:
            return self.sequence_model(embeddings, attention_mask == 0)
        if not self.use_attention_mask:  # upstream: padding is attended to
            return self.llm(inputs_embeds=embeddings).last_hidden_state
        # Positions count from each row's first real token, so padding does not shift them.
        position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp_min(0)
        if not self.use_prefix_cache:
            return self.llm(inputs_embeds=embeddings, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        prefix = len(self.prefix_ids)
        series = embeddings.shape[0]
        cached = self.prefix_key_values(embeddings.device, embeddings.dtype)
        past = DynamicCache(ddp_cache_data=[(k.expand(series, -1, -1, -1), v.expand(series, -1, -1, -1)) for k, v in cached])
        return self.llm(
            inputs_embeds=embeddings[:, prefix:], attention_mask=attention_mask, position_ids=position_ids[:, prefix:],
            past_key_values=past, use_cache=True,
        ).last_hidden_state
