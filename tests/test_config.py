"""Recipe loading: YAML + `--key value` overrides, type coercion, unknown keys, validation."""

import pytest

from dpo_scale.config import Recipe, load_recipe, parse_overrides
from dpo_scale.errors import DpoScaleError


def write_yaml(tmp_path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_validate():
    recipe = load_recipe()
    assert recipe == Recipe()
    assert recipe.loss_type == ["sigmoid"]


def test_yaml_then_cli_overrides_with_types(tmp_path):
    path = write_yaml(tmp_path, (
        "beta: 0.3\n"
        "batch_size: 8\n"
        "org_name: Qwen\n"
        "pos_name: Deep Qwen\n"
        "loss_type: [sigmoid, sft]\n"
        "loss_weights: [1.0, 0.5]\n"
        "keep_unnamed: yes\n"
        "max_prompts: 100\n"
    ))
    overrides = parse_overrides([
        "--batch_size", "4", "--learning-rate=2e-5", "--max_prompts", "null", "--keep_unnamed", "false",
        "--temperature", "0.7", "--num_samples", "3", "--gen_system_prompt", "None", "--bf16",
    ])
    recipe = load_recipe(path, overrides)
    assert recipe.beta == 0.3 and isinstance(recipe.beta, float)
    assert recipe.batch_size == 4 and isinstance(recipe.batch_size, int)  # CLI wins over YAML
    assert recipe.learning_rate == 2e-5 and isinstance(recipe.learning_rate, float)
    assert recipe.org_name == "Qwen" and recipe.pos_name == "Deep Qwen"
    assert recipe.loss_type == ["sigmoid", "sft"]
    assert recipe.loss_weights == [1.0, 0.5] and all(isinstance(w, float) for w in recipe.loss_weights)
    assert recipe.max_prompts is None
    assert recipe.keep_unnamed is False
    assert recipe.temperature == 0.7 and recipe.num_samples == 3
    assert recipe.gen_system_prompt is None
    assert recipe.bf16 is True  # a bare --flag means true


def test_cli_list_values():
    recipe = load_recipe(None, parse_overrides(["--loss_type", "sigmoid,sft", "--loss_weights", "1,0.2",
                                                "--lora_target_modules", "q_proj, v_proj"]))
    assert recipe.loss_type == ["sigmoid", "sft"]
    assert recipe.loss_weights == [1.0, 0.2]
    assert recipe.lora_target_modules == ["q_proj", "v_proj"]


def test_null_is_refused_for_a_non_optional_key():
    with pytest.raises(DpoScaleError, match="'batch_size' must not be null"):
        load_recipe(None, {"batch_size": None})


@pytest.mark.parametrize("key,value,expects", [
    ("batch_size", "four", "int"), ("beta", "high", "float"), ("keep_unnamed", "maybe", "bool"),
    ("batch_size", 2.5, "int"),
])
def test_wrong_type_names_key_and_type(key, value, expects):
    with pytest.raises(DpoScaleError, match=rf"key '{key}' expects {expects}"):
        load_recipe(None, {key: value})


def test_unknown_cli_key_suggests_the_close_one():
    with pytest.raises(DpoScaleError, match=r"unknown option '--bata'.*did you mean 'beta'"):
        load_recipe(None, parse_overrides(["--bata", "0.1"]))


def test_unknown_yaml_key_names_file_and_suggests(tmp_path):
    path = write_yaml(tmp_path, "org_nme: Qwen\n")
    with pytest.raises(DpoScaleError, match=r"recipe\.yaml: unknown key 'org_nme'.*did you mean 'org_name'"):
        load_recipe(path)


def test_unknown_key_without_close_match_has_no_suggestion():
    with pytest.raises(DpoScaleError) as e:
        load_recipe(None, {"zzzzzz": "1"})
    assert "did you mean" not in str(e.value)


def test_yaml_errors(tmp_path):
    with pytest.raises(DpoScaleError, match="recipe file not found"):
        load_recipe(str(tmp_path / "missing.yaml"))
    with pytest.raises(DpoScaleError, match="malformed YAML"):
        load_recipe(write_yaml(tmp_path, "beta: [1, 2\n"))
    with pytest.raises(DpoScaleError, match="mapping"):
        load_recipe(write_yaml(tmp_path, "- a\n- b\n"))


def test_parse_overrides_forms():
    assert parse_overrides(["--a", "1", "--b=x=y", "--c", "--d-e", "-1"]) == {
        "a": "1", "b": "x=y", "c": "true", "d_e": "-1"}
    with pytest.raises(DpoScaleError, match="expected --key value"):
        parse_overrides(["beta", "0.1"])


@pytest.mark.parametrize("overrides,key,message", [
    ({"batch_size": "0"}, "batch_size", "must be > 0"),
    ({"batch_size": "-3"}, "batch_size", "must be > 0"),
    ({"org_name": ""}, "org_name", "must not be empty"),
    ({"org_name": "   "}, "org_name", "must not be empty"),
    ({"pos_name": ""}, "pos_name", "must not be empty"),
    ({"org_name": "Qwen", "pos_name": "Qwen"}, "pos_name", "must differ"),
    ({"org_name": "Qwen", "pos_name": "qWEN "}, "pos_name", "must differ"),  # case-insensitive
    ({"backend": "tgi"}, "backend", "unknown backend 'tgi'"),
    ({"beta": "0"}, "beta", "must be > 0"),
    ({"beta": "-0.1"}, "beta", "must be > 0"),
    ({"loss_type": "sigmoid,bogus"}, "loss_type", "unknown loss type 'bogus'"),
    ({"num_samples": "2", "temperature": "0"}, "num_samples", "temperature > 0"),
    ({"dtype": "int3"}, "dtype", "unknown dtype"),
    ({"loss_type": "sigmoid,sft", "loss_weights": "1"}, "loss_weights", "one weight per loss_type"),
    ({"top_p": "0"}, "top_p", r"\(0, 1\]"),
])
def test_validation_errors(overrides, key, message):
    with pytest.raises(DpoScaleError, match=rf"config key '{key}': .*{message}"):
        load_recipe(None, overrides)


def test_validation_accepts_sampling_with_temperature():
    recipe = load_recipe(None, {"num_samples": "2", "temperature": "0.8"})
    assert recipe.num_samples == 2


def test_stage_folders_default_under_output_dir(tmp_path):
    recipe = load_recipe(None, {"output_dir": str(tmp_path / "run"), "merged_dir": str(tmp_path / "elsewhere")})
    assert recipe.data_path == tmp_path / "run" / "data"
    assert recipe.adapter_path == tmp_path / "run" / "adapter"
    assert recipe.merged_path == tmp_path / "elsewhere"
