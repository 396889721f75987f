"""Sparse mixture of experts for Time-LLM (`--use_moe 1`, `--num_experts`, `--top_k_experts`,
`--moe_d_ff`), applied to the reprogrammed patches before the LLM.

    tokens x [S, P, d] --router Linear(d -> E), softmax--> probabilities [S*P, E]
      --> top-k experts per token, their probabilities renormalised to sum to 1
      --> sum_k weight_k * expert_k(x) (each expert: Linear(d -> moe_d_ff), GELU, dropout, Linear)
      --> residual, LayerNorm --> [S, P, d]

Load balancing (Switch Transformer, Fedus et al. 2021; GShard): E * sum_e f_e * p_e, with f_e the
fraction of the token-to-expert assignments that went to expert e and p_e the mean router
probability of e. The specification counted top-k indices alone, which has no gradient; here p_e
carries the gradient to the router, and the loss is 1 when routing is uniform. It is returned as
the auxiliary loss `moe_balance` (weight `--lambda_moe`), and each expert's share of assignments as
diagnostics `moe_usage_<e>`, which the trainer averages and logs per epoch.
"""
import torch
from torch import nn

from layers.AddOn import AddOn, AddOnOutput, SeriesContext, Stage
from utils.settings.addons import MoEConfig


class TimeSeriesMoE(AddOn):
    stage = Stage.REPROGRAMMED

    def __init__(self, config: MoEConfig):
        super().__init__()
        d_model = config.llm_dim
        self.num_experts, self.top_k = config.num_experts, config.top_k_experts
        self.router = nn.Linear(d_model, config.num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, config.moe_d_ff), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(config.moe_d_ff, d_model))
            for _ in range(config.num_experts)
        )
        self.norm = nn.LayerNorm(d_model)
        self.aux_loss_weights = {"moe_balance": config.lambda_moe}

    def forward(self, x: torch.Tensor, context: SeriesContext) -> AddOnOutput:
        """x [S, P, d] -> output [S, P, d], aux loss `moe_balance`, diagnostics `moe_usage_<e>` (shares)."""
        tokens = x.reshape(-1, x.shape[-1])  # [S*P, d]
        probabilities = torch.softmax(self.router(tokens).float(), dim=-1)  # [S*P, E]
        top_probabilities, top_experts = probabilities.topk(self.top_k, dim=-1)  # [S*P, k]
        weights = (top_probabilities / top_probabilities.sum(dim=-1, keepdim=True)).to(x.dtype)
        mixed = torch.zeros_like(tokens)
        for expert_index, expert in enumerate(self.experts):
            token_rows, slot = (top_experts == expert_index).nonzero(as_tuple=True)
            if len(token_rows):
                mixed.index_add_(0, token_rows, weights[token_rows, slot].unsqueeze(-1) * expert(tokens[token_rows]))
        output = self.norm(tokens + mixed).reshape(x.shape)
        dispatch = torch.zeros_like(probabilities).scatter_(1, top_experts, 1.0).mean(dim=0) / self.top_k  # f_e, sums to 1
        balance = self.num_experts * (dispatch.detach() * probabilities.mean(dim=0)).sum()
        usage = {f"moe_usage_{e}": dispatch[e].detach() for e in range(self.num_experts)}
        return AddOnOutput(output, aux_losses={"moe_balance": balance}, diagnostics=usage)
