"""dtype auto (dpo_scale/precision.py): what each stage runs in, from the host's flags; explicit settings win."""

import pytest

from dpo_scale import precision
from dpo_scale.config import load_recipe


@pytest.fixture
def host(monkeypatch):
    """Pretend to be a CPU host with the given flags (no GPU)."""

    def set_flags(*flags: str) -> None:
        info = {"cpu": "Test CPU", "flags": {f: f in flags for f in precision.CPU_FLAGS}}
        monkeypatch.setattr(precision, "cpu_info", lambda: info)
        monkeypatch.setattr("torch.cuda.is_available", lambda: False)

    return set_flags


@pytest.mark.parametrize("flags", [("avx2", "avx512f", "avx512_bf16"), ("avx2", "avx512f", "amx_bf16")])
def test_auto_picks_bf16_where_the_cpu_has_fast_bf16(host, flags):
    host(*flags)
    recipe = load_recipe(None, {})
    assert recipe.dtype == "auto"
    gen, train = precision.stage_precision(recipe, "generate"), precision.stage_precision(recipe, "train")
    assert gen.dtype == "bfloat16" and not gen.autocast_bf16
    assert train.dtype == "float32" and train.autocast_bf16  # fp32 weights and optimizer, bf16 matmuls
    assert "Test CPU" in train.reason and flags[-1] in train.reason
    for stage in ("merge", "eval"):  # rounding the merged weights to bf16 would read as drift
        choice = precision.stage_precision(recipe, stage)
        assert (choice.dtype, choice.autocast_bf16) == ("float32", False)


def test_auto_stays_fp32_on_an_avx2_only_cpu(host):
    host("avx2")
    recipe = load_recipe(None, {})
    assert precision.stage_precision(recipe, "generate").dtype == "float32"
    train = precision.stage_precision(recipe, "train")
    assert (train.dtype, train.autocast_bf16) == ("float32", False)
    assert "neither" in train.reason


def test_an_explicit_dtype_or_bf16_always_wins(host):
    host("amx_bf16")
    fp32 = load_recipe(None, {"dtype": "float32"})
    assert precision.stage_precision(fp32, "generate").dtype == "float32"
    assert precision.stage_precision(fp32, "train").autocast_bf16 is False
    assert "set in the recipe" in precision.stage_precision(fp32, "train").reason
    # the GPU recipe's setting: bf16 weights with bf16 autocast (the fp32 LoRA adapters' matmuls run in bf16)
    gpu = load_recipe(None, {"dtype": "bfloat16", "bf16": "true"})
    assert precision.stage_precision(gpu, "train").autocast_bf16 is True
    assert load_recipe(None, {"gen_dtype": "float32"}).gen_dtype == "float32"
    assert precision.stage_precision(load_recipe(None, {"gen_dtype": "float32"}), "generate").dtype == "float32"
    host("avx2")
    assert precision.stage_precision(load_recipe(None, {"bf16": "true"}), "train").autocast_bf16 is True


def test_cpu_info_reads_this_host():
    info = precision.cpu_info()
    assert set(info["flags"]) == set(precision.CPU_FLAGS) and info["cpu"]
