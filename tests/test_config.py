"""Recipe loading: YAML + `--key value` overrides, type coercion, unknown keys, validation, and the DPOConfig built
from a recipe (every TRL field reachable, TRL's own checks as one clear error)."""

from enum import Enum
from pathlib import Path

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


@pytest.mark.parametrize("value, layers", [
    ("15-17", [15, 16, 17]), ("0, 3-4", [0, 3, 4]), ([2, "5-6"], [2, 5, 6]), (7, [7]), ("null", None),
])
def test_layer_lists_take_ranges(value, layers):
    assert load_recipe(None, {"lora_layers_to_transform": value}).lora_layers_to_transform == layers


@pytest.mark.parametrize("value, message", [
    ("5-3", r"expects list\[int\]"), ("1.5", r"expects list\[int\]"), ("a-b", r"expects list\[int\]"),
    ("-1", "must list layer indices >= 0"), ([], "must list layer indices >= 0"),
])
def test_bad_layer_lists_name_the_key(value, message):
    with pytest.raises(DpoScaleError, match=rf"'lora_layers_to_transform'.* {message}"):
        load_recipe(None, {"lora_layers_to_transform": value})


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
    ({"num_samples": "2", "temperature": "0"}, "num_samples", "temperature > 0"),
    ({"dtype": "int3"}, "dtype", "unknown dtype"),
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


def training_args(*argv: str, path: str | None = None):
    from dpo_scale.train import build_training_args

    recipe = load_recipe(path, parse_overrides(list(argv)))
    return recipe, build_training_args(recipe, Path(recipe.output_dir) / "checkpoints", 1)


def test_trl_fields_beyond_the_recipe_reach_dpo_config(tmp_path):
    recipe, args = training_args(
        "--optim", "adamw_torch", "--max_grad_norm", "0.5", "--label_smoothing", "0.1",
        "--report_to", "tensorboard,wandb", "--padding_free", "--push_to_hub", "false", "--ld_alpha", "0.5",
        "--output_dir", str(tmp_path))
    assert recipe.training_args == {"optim": "adamw_torch", "max_grad_norm": 0.5, "label_smoothing": 0.1,
                                    "padding_free": True, "push_to_hub": False, "ld_alpha": 0.5}
    assert args.optim == "adamw_torch" and args.max_grad_norm == 0.5 and args.label_smoothing == 0.1
    assert args.report_to == ["tensorboard", "wandb"]
    assert args.padding_free is True and args.push_to_hub is False and args.ld_alpha == 0.5
    assert args.output_dir == str(tmp_path / "checkpoints")
    assert recipe.to_dict()["training_args"]["optim"] == "adamw_torch"  # manifests record them


def test_trl_fields_from_yaml_keep_their_types(tmp_path):
    path = write_yaml(tmp_path, (
        "optim: sgd\n"
        "max_grad_norm: 2\n"
        "lr_scheduler_kwargs: {min_lr: 1.0e-6}\n"
        "lr_scheduler_type: cosine_with_min_lr\n"
        "report_to: none\n"
        "loss_weights: [1, 0.5]\n"
        "loss_type: [sigmoid, sft]\n"
        "torch_empty_cache_steps: null\n"
    ))
    recipe, args = training_args(path=path)
    assert args.optim == "sgd" and args.max_grad_norm == 2.0 and isinstance(args.max_grad_norm, float)
    assert args.lr_scheduler_kwargs == {"min_lr": 1e-6} and args.lr_scheduler_type == "cosine_with_min_lr"
    assert args.report_to == [] and args.loss_weights == [1.0, 0.5] and args.torch_empty_cache_steps is None


def test_recipe_keys_keep_their_project_defaults_in_dpo_config():
    recipe, args = training_args("--dtype", "float32")
    # TRL's own defaults would be bf16=True, gradient_checkpointing=True, learning_rate=1e-6, linear schedule.
    assert args.bf16 is False and args.gradient_checkpointing is False
    assert args.learning_rate == recipe.learning_rate == 1e-4 and args.lr_scheduler_type == "cosine"
    assert args.warmup_steps == recipe.warmup_ratio  # transformers 5: a float < 1 is a ratio of the steps
    assert args.seed == args.data_seed == recipe.seed and args.report_to == ["tensorboard"]


def test_warmup_steps_replaces_warmup_ratio():
    assert training_args("--warmup_ratio", "0.2")[1].warmup_steps == 0.2
    assert training_args("--warmup_ratio", "0.2", "--warmup_steps", "5")[1].warmup_steps == 5


def test_every_dpo_config_field_is_a_recipe_key(tmp_path):
    """Each DPOConfig field with a plain default, given on the command line, gives DPOConfig that value."""
    from trl import DPOConfig

    from dpo_scale.config import FIELDS, RESERVED, dpo_config_fields, passthrough_keys
    from dpo_scale.train import build_training_args

    assert set(dpo_config_fields()) <= set(FIELDS) | set(passthrough_keys()) | set(RESERVED)
    plain = DPOConfig(output_dir=str(tmp_path), use_cpu=True)
    checked = 0
    for name in passthrough_keys():
        default = dpo_config_fields()[name].default
        if isinstance(default, bool | int | float | str) and not isinstance(default, Enum) and str(default):
            recipe = load_recipe(None, {name: str(default), "output_dir": str(tmp_path)})
            assert list(recipe.training_args) == [name]
            assert getattr(build_training_args(recipe, tmp_path, 1), name) == getattr(plain, name), name
            checked += 1
    assert checked > 60


def test_loss_types_come_from_trl():
    """sigmoid_norm is a TRL 1.16 loss the old hand-copied list lacked."""
    assert training_args("--loss_type", "sigmoid_norm,sft")[1].loss_type == ["sigmoid_norm", "sft"]
    with pytest.raises(DpoScaleError, match=r"^config key 'loss_type': unknown loss type 'bogus'.*sigmoid_norm"):
        training_args("--loss_type", "sigmoid,bogus")


@pytest.mark.parametrize("argv,message", [
    (["--loss_type", "sigmoid,sft", "--loss_weights", "1"], r"^config key 'loss_weights': .*same length"),
    (["--torch_empty_cache_steps", "0"], r"^config key 'torch_empty_cache_steps': .*bigger than 0"),
])
def test_trl_validation_errors_name_the_key(argv, message):
    with pytest.raises(DpoScaleError, match=message) as e:
        training_args(*argv)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("argv,message", [
    (["--optim", "adamw_foo"], r"^command line: key 'optim': invalid choice: 'adamw_foo'"),
    (["--max_grad_norm", "abc"], r"^command line: key 'max_grad_norm': invalid float value: 'abc'"),
    (["--padding_free", "maybe"], r"^command line: key 'padding_free': .*maybe"),
    (["--max_grad_nrom", "1"], r"unknown option '--max_grad_nrom' \(did you mean 'max_grad_norm'\?\)"),
    (["--use_cpu", "true"], r"key 'use_cpu' is set by dpo_scale; set device: cpu"),
    (["--training_args", "x"], r"unknown option '--training_args'"),
])
def test_bad_trl_keys_are_one_clear_error(argv, message):
    with pytest.raises(DpoScaleError, match=message):
        load_recipe(None, parse_overrides(argv))


def test_yaml_typo_of_a_trl_field_suggests_it(tmp_path):
    with pytest.raises(DpoScaleError, match=r"recipe\.yaml: unknown key 'max_grad_nom' \(did you mean 'max_grad_norm'"):
        load_recipe(write_yaml(tmp_path, "max_grad_nom: 1.0\n"))


def test_render_config_shows_recipe_and_dpo_config():
    from dpo_scale.config import render_config

    recipe, args = training_args("--optim", "sgd", "--beta", "0.3")
    text = render_config(recipe, args)
    recipe_part, dpo_part = text.split("# TRL DPOConfig")
    assert "\noptim: sgd\n" in recipe_part and "\nbeta: 0.3\n" in recipe_part and "training_args" not in text
    assert "\noptim: sgd\n" in dpo_part and "\nbeta: 0.3\n" in dpo_part and "\nmax_grad_norm: 1.0\n" in dpo_part
