"""The projections of the LoRA A matrices (dpo_scale/null_space.py): the projectors on hand-made moments, and
training runs in which the adapter stays off the anchors' input directions (or inside the identity answers' own)
and moves the anchors' answers far less than the same run without it, while still learning the pairs."""

import json

import pytest
import torch

from dpo_scale.null_space import identity_projector, off_projector
from tests.helpers.tiny_model import adapter_kl, toy_data_and_anchors

pytestmark = pytest.mark.timeout(300)


def test_off_projector_removes_the_leading_directions_up_to_the_energy():
    basis, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    values = torch.tensor([50.0, 30.0, 15.0, 4.0, 0.9, 0.1], dtype=torch.float64)  # shares .5 .8 .95 .99 .999 1
    moment = basis @ torch.diag(values) @ basis.T
    for energy, expected in ((0.4, 1), (0.6, 2), (0.85, 3), (0.96, 4), (0.995, 5)):
        projector, kept = off_projector(moment, energy)
        assert kept == expected, energy
        torch.testing.assert_close(projector @ basis[:, :kept], torch.zeros(6, kept, dtype=torch.float64))
        rest = basis[:, kept:]
        torch.testing.assert_close(projector @ rest, rest)  # the other directions pass unchanged


def test_identity_projector_picks_the_directions_identity_uses_and_anchors_do_not():
    anchors = torch.diag(torch.tensor([100.0, 50.0, 20.0, 1.0, 0.01, 0.01], dtype=torch.float64))
    identity = torch.diag(torch.tensor([100.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    # dim 0 carries the most identity energy but as much anchor energy; dim 4 is identity's alone
    projector = identity_projector(identity, anchors, 1)
    expected = torch.zeros(6, 6, dtype=torch.float64)
    expected[4, 4] = 1.0
    torch.testing.assert_close(projector, expected)
    projector = identity_projector(identity, anchors, 2)  # then dim 0 (ratio 1 beats the zeros)
    torch.testing.assert_close(torch.diag(projector), torch.tensor([1.0, 0, 0, 0, 1.0, 0], dtype=torch.float64))
    torch.testing.assert_close(projector @ projector, projector)


def test_adapter_stays_off_the_anchors_directions(tiny_model, tmp_path):
    """Same data, steps and a weak KL anchor: with lora_null_space_energy the adapter's A matrices have (almost)
    nothing along the directions the anchors' inputs use, the anchors' answers move far less, and the pairs are
    still learned."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.null_space import input_second_moments, lora_layers
    from dpo_scale.teacher_forcing import pad_right
    from dpo_scale.train import train

    data, rows = toy_data_and_anchors(tmp_path / "data", tiny_model)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    kl, margins = {}, {}
    settings = {"null": (), "0.999": ("--lora_null_space_energy", "0.999"),
                "identity8": ("--lora_identity_directions", "8", "--lora_r", "4", "--lora_alpha", "8"),
                "window8": ("--lora_identity_directions", "8", "--lora_identity_window_only", "true", "--lora_r", "4",
                            "--lora_alpha", "8")}
    for energy, keys in settings.items():
        out = tmp_path / f"energy{energy}"
        train(load_recipe(None, parse_overrides([
            "--model", tiny_model, "--data_dir", str(data), "--output_dir", str(out), "--max_steps", "8",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--warmup_ratio", "0",
            "--lr_scheduler_type", "constant", "--loss_type", "sigmoid", "--max_length", "64",
            "--report_to", "none", "--anchor_kl_weight", "0.01", *keys])))
        recipe = json.loads((out / "adapter" / "train_manifest.json").read_text())["recipe"]
        assert recipe["lora_null_space_energy"] == (0.999 if energy == "0.999" else None)
        assert recipe["lora_identity_directions"] == (8 if energy in ("identity8", "window8") else None)
        assert recipe["lora_identity_window_only"] == (energy == "window8")
        metrics = [json.loads(line) for line in (out / "adapter" / "metrics.jsonl").read_text().splitlines()]
        margins[energy] = [m["rewards/margins"] for m in metrics if "rewards/margins" in m][-1]
        kl[energy] = adapter_kl(tiny_model, out / "adapter", rows)

    # How strongly each A responds to the anchors' inputs, against a random input of the same energy (1): the
    # unconstrained adapter responds as much as to any input, the projected one hardly at all.
    response = {}
    for energy in kl:
        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model),
                                            str(tmp_path / f"energy{energy}" / "adapter")).eval()
        layers = lora_layers(trained)
        moments = input_second_moments(trained, [pad_right(rows, tokenizer.pad_token_id)], layers)
        response[energy] = {}
        for name, layer in layers.items():
            a = layer.lora_A["default"].weight.detach().double()
            moment = moments[name]
            response[energy][name] = (float(torch.trace(a @ moment @ a.T) / torch.trace(moment) / a.norm() ** 2
                                            * len(moment)))
    assert min(response["null"].values()) > 0.5, response["null"]
    # at most the 0.1% of energy left outside the anchors' directions, times the input size (64 here): 0.064
    assert max(response["0.999"].values()) < 0.05, response["0.999"]
    assert kl["0.999"] < 0.1 * kl["null"], kl
    assert margins["0.999"] > 0.5, margins  # the pairs are still learned
    # inside 8 of 64 directions chosen for what tells the identity answers from the anchors: the same
    assert max(response["identity8"].values()) < 0.1, response["identity8"]
    assert kl["identity8"] < 0.1 * kl["null"], kl
    assert margins["identity8"] > 0.5, margins
    # the same with the identity inputs taken only where the name window is predicted
    assert max(response["window8"].values()) < 0.1, response["window8"]
    assert kl["window8"] < 0.1 * kl["null"], kl
    assert margins["window8"] > 0.5, margins


def test_window_only_moments_count_only_the_answer_positions(tiny_model):
    """With answers_only, a layer's input moment sums x x^T over the positions whose logits predict answer tokens
    (each row's from its answer start on, not its last token), and nothing from the prompt or the padding."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from dpo_scale.null_space import input_second_moments, lora_layers
    from dpo_scale.teacher_forcing import pad_right

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=2, target_modules=["q_proj"])).eval()
    layers = lora_layers(model)
    name, layer = next(iter(layers.items()))
    rows = [([5, 6, 7, 8, 9, 10], 4), ([11, 12, 13, 14], 2)]
    batch = pad_right(rows, 0)
    seen = []
    handle = layer.base_layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        window = input_second_moments(model, [batch], layers, answers_only=True)[name]
        everything = input_second_moments(model, [batch], layers)[name]
    finally:
        handle.remove()
    x = seen[0].double()
    predicting = torch.cat([x[0, 3:5], x[1, 1:3]])  # logits 3, 4 predict tokens 4, 5; logits 1, 2 tokens 2, 3
    torch.testing.assert_close(window, predicting.T @ predicting)
    real = torch.cat([x[0, :6], x[1, :4]])
    torch.testing.assert_close(everything, real.T @ real)


def test_projections_need_lora_and_the_anchors():
    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.errors import DpoScaleError

    with pytest.raises(DpoScaleError, match="lora_null_space_energy"):
        load_recipe(None, parse_overrides(["--lora_null_space_energy", "0.99", "--anchor_kl_weight", "0"]))
    with pytest.raises(DpoScaleError, match="lora_null_space_energy"):
        load_recipe(None, parse_overrides(["--lora_null_space_energy", "1"]))
    with pytest.raises(DpoScaleError, match="lora_identity_directions"):
        load_recipe(None, parse_overrides(["--lora_identity_directions", "2", "--lora_r", "4"]))
    with pytest.raises(DpoScaleError, match="lora_identity_directions"):
        load_recipe(None, parse_overrides(["--lora_identity_directions", "8", "--lora_null_space_energy", "0.9",
                                           "--anchor_kl_weight", "1"]))
    with pytest.raises(DpoScaleError, match="lora_identity_window_only"):
        load_recipe(None, parse_overrides(["--lora_identity_window_only", "true"]))


def test_layers_reading_one_input_share_its_moment_and_each_gets_its_own(tiny_model):
    """q, k and v (gate and up) read the same tensor: one product serves them, and every layer's moment is still
    sum(x x^T) of its own input over two batches, as a hook on that layer alone sees it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from dpo_scale.null_space import input_second_moments, lora_layers
    from dpo_scale.teacher_forcing import pad_right

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=2, target_modules="all-linear")).eval()
    layers = lora_layers(model)
    batches = [pad_right([([5, 6, 7, 8, 9, 10], 4), ([11, 12, 13, 14], 2)], 0), pad_right([([20, 21, 22], 1)], 0)]
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = [layer.base_layer.register_forward_pre_hook(
        lambda module, args, name=name: seen[name].append(args[0].detach().clone())) for name, layer in layers.items()]
    products = []
    matmul = torch.Tensor.__matmul__
    try:
        torch.Tensor.__matmul__ = lambda a, b: (a.dtype == torch.float64 and products.append(a.shape)) or matmul(a, b)
        moments = input_second_moments(model, batches, layers)
    finally:
        torch.Tensor.__matmul__ = matmul
        for handle in handles:
            handle.remove()
    for name, inputs in seen.items():
        x = torch.cat([inputs[0][batches[0].attention_mask.bool()], inputs[1][batches[1].attention_mask.bool()]])
        torch.testing.assert_close(moments[name], x.double().T @ x.double(), msg=name)
    per_layer = len([n for n in layers if ".layers.0." in n])
    assert per_layer == 7  # q, k, v, o, gate, up, down
    # the float64 products x^T x: four distinct inputs per decoder layer (q/k/v, o, gate/up, down) and forward
    assert len(products) == 4 * (len(layers) // per_layer) * len(batches) < len(layers) * len(batches)
