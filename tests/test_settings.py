"""Typed configuration (utils/settings/): modules built from their own section, one owner per flag,
the overloaded --top_k and --d_ff untangled, and configurations saved before a flag existed."""
import pytest
import torch

from utils.config import architecture_of, build_parser, flag_defaults, parse_config, upgrade_saved_config
from utils.settings import MoEConfig, TimesNetConfig, all_sections


def test_a_module_takes_its_own_section():
    from layers.TimeSeriesMoE import TimeSeriesMoE
    from models.TimesNet import Model as TimesNet

    moe = TimeSeriesMoE(MoEConfig(num_experts=4, llm_dim=32, moe_d_ff=16))
    assert len(moe.experts) == 4 and moe.router.out_features == 4
    patches = torch.randn(3, 5, 32)  # [B*N, P, d_llm]
    assert moe(patches, None).value.shape == patches.shape
    timesnet = TimesNet(TimesNetConfig(seq_len=32, label_len=8, pred_len=8, enc_in=3, c_out=3, top_k=2, num_kernels=2, d_model=8, d_ff=8))
    assert timesnet.blocks[0].top_k == 2
    x, marks = torch.randn(2, 32, 3), torch.zeros(2, 32, 4)  # hourly time features
    assert timesnet(x, marks, torch.zeros(2, 16, 3), None).prediction.shape == (2, 8, 3)


@pytest.mark.parametrize("section, values, flag", [
    (MoEConfig, dict(num_experts=2, top_k_experts=3), "--top_k_experts"),
    (MoEConfig, dict(num_experts=0, top_k_experts=0), "--num_experts"),
    (TimesNetConfig, dict(seq_len=8, pred_len=2, top_k=9), "--top_k"),
])
def test_a_section_validates_itself_naming_the_flag(section, values, flag):
    with pytest.raises(ValueError, match=f"^{flag} "):
        section(**values)


def test_every_flag_has_one_section_and_the_parser_is_generated_from_them():
    owned = [item.name for section in all_sections() for item in section.flag_fields()]
    assert len(owned) == len(set(owned))  # no flag defined twice
    parser_defaults = {action.dest: action.default for action in build_parser()._actions if action.dest not in ("help", "config")}
    assert parser_defaults == flag_defaults()
    groups = {group.title for group in build_parser()._action_groups}
    assert {section.group for section in all_sections()} <= groups
    config = parse_config(["--model", "TimeLLM"])
    for section in all_sections():  # each builds from a resolved configuration, holding its values
        built = section.from_config(config)
        assert all(getattr(built, item.name) == getattr(config, item.name) for item in section.flag_fields())
    # Architecture: the sizes of an add-on are, its loss weights and run-time places are not.
    architecture = architecture_of(parse_config(["--model", "TimeLLM"]))
    assert {"num_experts", "moe_d_ff", "gram_top_k", "d_keys", "llm_features", "seq_len", "d_ff"} <= set(architecture)
    assert not {"lambda_moe", "lambda_trend", "hybrid_workers", "gram_retrieval", "learning_rate", "llm_dtype"} & set(architecture)


def test_sections_validate_only_for_the_models_they_configure():
    parse_config(["--model", "DLinear", "--seq_len", "6", "--label_len", "2", "--pred_len", "2"])  # TimesNet's top_k 5 > (6 + 2) // 2: not DLinear's concern
    with pytest.raises(SystemExit):
        parse_config(["--model", "TimesNet", "--seq_len", "6", "--label_len", "2", "--pred_len", "2"])


def test_top_k_is_routed_to_the_module_of_the_model(capsys):
    timesnet = parse_config(["--model", "TimesNet", "--top_k", "3"])
    assert timesnet.top_k == 3 and timesnet.gram_top_k == 5
    timellm = parse_config(["--model", "TimeLLM", "--top_k", "3"])  # seed 002's spelling for GRA-M
    assert timellm.gram_top_k == 3 and timellm.top_k == 5
    assert parse_config(["--model", "TimeLLM", "--gram_top_k", "7"]).gram_top_k == 7
    assert parse_config(["--model", "TimeLLM", "--top_k", "7", "--gram_top_k", "7"]).gram_top_k == 7
    with pytest.raises(SystemExit):
        parse_config(["--model", "TimeLLM", "--top_k", "3", "--gram_top_k", "7"])
    assert "--top_k 3 and --gram_top_k 7" in capsys.readouterr().err


def test_d_ff_sets_time_llm_key_width_and_head_features_unless_each_is_given():
    from models import build_model

    common = ["--model", "TimeLLM", "--llm_model", "tiny-llama", "--llm_layers", "1", "--seq_len", "32", "--label_len", "8", "--pred_len", "8",
              "--patch_len", "8", "--stride", "4", "--d_model", "8", "--n_heads", "2", "--num_tokens", "20", "--d_ff", "16", "--enc_in", "1", "--content", "a test series"]
    upstream = parse_config(common)
    assert upstream.d_keys == upstream.llm_features == 16
    model = build_model(parse_config([*common, "--d_keys", "4", "--llm_features", "12"]))
    assert model.reprogramming.query_projection.out_features == 4 * 2  # d_keys x heads
    assert model.head.linear.in_features == 12 * model.patch_count
    x = torch.randn(2, 32, 1)
    assert model(x, None, torch.zeros(2, 16, 1), None).prediction.shape == (2, 8, 1)


def test_a_configuration_saved_before_a_flag_existed_loads_in_todays_terms():
    saved = {"model": "TimeLLM", "top_k": 3, "d_ff": 32, "fusion_method": "weighted", "seq_len": 96}
    upgraded = upgrade_saved_config(saved)
    assert upgraded["gram_top_k"] == 3 and upgraded["d_keys"] == upgraded["llm_features"] == 32
    assert upgraded["fusion_method"] == "learned"  # before seed 000's confidence weighting, 'weighted' was the learned logits
    assert upgraded["use_arima"] == upgraded["use_es"] == 1 and upgraded["base_num_tokens"] == 1000  # what that version did
    current = upgrade_saved_config(vars(parse_config(["--model", "TimeLLM", "--fusion_method", "weighted"])))
    assert current["fusion_method"] == "weighted"  # a configuration of today is left as it is
    assert set(upgraded) >= set(flag_defaults())
