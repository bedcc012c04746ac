"""The shared trunk runs the layers below the adapter once for a batch's adapter-on and adapter-off passes: each pass
must give the logits and gradients it gives alone, the layers below must run once, and a decoder the skip would
compute wrongly must be caught."""

import pytest
import torch

from dpo_scale.shared_trunk import lowest_adapted_layer, share_trunk


def lora_model(config, layers: list[int]):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                             layers_to_transform=layers, init_lora_weights=False))
    model.train()
    return model


def llama(layers: int = 4):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding, as the KL batches have
    return {"input_ids": ids, "attention_mask": mask}


def policy_then_reference(model, inputs):
    """DPO's order: the policy pass (with gradients), then the reference (adapter off, no gradients)."""
    policy = model(**inputs, use_cache=False).logits
    policy.float().pow(2).mean().backward()
    with torch.no_grad(), model.disable_adapter():
        reference = model(**inputs, use_cache=False).logits
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return policy.detach(), reference, grads


def count_calls(module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_same_logits_and_gradients_with_the_lower_layers_run_once():
    inputs = batch()
    plain = lora_model(llama(), [2, 3])
    expected = [policy_then_reference(plain, inputs) for _ in range(2)]

    shared = lora_model(llama(), [2, 3])
    assert lowest_adapted_layer(shared) == 2
    trunk = share_trunk(shared)
    bottom = count_calls(shared.get_decoder().layers[0])
    got = [policy_then_reference(shared, inputs) for _ in range(2)]
    assert trunk.checked and trunk.saved_passes == 1  # the first skip is checked against the full pass
    assert bottom[0] == 3  # four passes: two full, the first skip checked by a full pass, one skipped
    for (policy, reference, grads), (policy_s, reference_s, grads_s) in zip(expected, got, strict=True):
        torch.testing.assert_close(policy_s, policy)
        torch.testing.assert_close(reference_s, reference)
        assert grads.keys() == grads_s.keys() and grads
        for name in grads:
            torch.testing.assert_close(grads_s[name], grads[name])
    assert not torch.allclose(got[0][0], got[0][1])  # the adapter changes the logits: the test sees both passes


def test_reference_first_then_policy_and_other_inputs_run_in_full():
    """The KL anchor's order (reference, then policy); a batch with other inputs never reuses the kept states."""
    inputs, other = batch(), batch()
    other["attention_mask"] = torch.ones_like(other["attention_mask"])
    model = lora_model(llama(), [1, 2, 3])
    with torch.no_grad():
        expected_ref = [model(**x, use_cache=False).logits for x in (inputs, other)]
        expected_policy = [model(**x, use_cache=False).logits for x in (inputs, other)]
        with model.disable_adapter():
            expected_ref = [model(**x, use_cache=False).logits for x in (inputs, other)]
    trunk = share_trunk(model)
    bottom = count_calls(model.get_decoder().layers[0])
    for x, ref, policy in zip((inputs, other), expected_ref, expected_policy, strict=True):
        with torch.no_grad(), model.disable_adapter():
            torch.testing.assert_close(model(**x, use_cache=False).logits, ref)
        torch.testing.assert_close(model(**x, use_cache=False).logits.detach(), policy)
    assert trunk.saved_passes == 1 and bottom[0] == 3
    with torch.no_grad(), model.disable_adapter():  # `other`'s states were used once: a third pass runs in full
        torch.testing.assert_close(model(**other, use_cache=False).logits, expected_ref[1])
    assert bottom[0] == 4


def test_nothing_to_share_with_adapters_from_layer_0():
    assert share_trunk(lora_model(llama(), [0, 3])) is None
    assert share_trunk(lora_model(llama(), [2]), enabled=False) is None


def scaled_embeddings(model):
    """The model's decoder, made to scale the embeddings inside its forward, between the lookup and the first layer
    (as Gemma's did before transformers moved the scale into the embedding module)."""
    decoder = model.get_decoder()
    base = type(decoder)

    class ScalesEmbeddings(base):
        def forward(self, input_ids=None, inputs_embeds=None, **kwargs):
            if inputs_embeds is None:
                inputs_embeds = self.embed_tokens(input_ids) * 2.0
            return base.forward(self, inputs_embeds=inputs_embeds, **kwargs)

    decoder.__class__ = ScalesEmbeddings
    return model


def test_a_decoder_that_transforms_its_embeddings_turns_sharing_off(caplog):
    """A pass started from the kept states would transform them again. The first skip is checked against the full
    pass, which is what the caller gets; sharing then turns itself off."""
    inputs = batch()
    expected = policy_then_reference(scaled_embeddings(lora_model(llama(), [2])), inputs)
    model = scaled_embeddings(lora_model(llama(), [2]))
    trunk = share_trunk(model)
    got = policy_then_reference(model, inputs)
    assert not trunk.checked and "differs from the full pass" in caplog.text
    torch.testing.assert_close(got[1], expected[1])
    assert "forward" not in model.get_decoder().__dict__  # the wrapper is gone
    policy_then_reference(model, inputs)
    assert trunk.saved_passes == 0


@pytest.mark.parametrize("layers", ["1", None])
def test_training_with_and_without_the_shared_trunk_gives_the_same_losses(layers, tmp_path, capsys,
                                                                         untrained_tiny_model):
    """Two steps of the anchored recipe (DPO + KL anchors + identity tails) with the trunk shared and not: the same
    losses; the manifest says how many layers ran once (0 with adapters on every layer)."""
    import json

    from tests.helpers.tiny_model import write_toy_pairs
    from tests.test_train import ANCHORED, args_for, manifest, run_main

    data = write_toy_pairs(tmp_path / "data", 16, anchors=8)
    losses = {}
    for shared in ("true", "false"):
        out = tmp_path / shared
        extra = ["--lora_layers_to_transform", layers] if layers else []
        argv = args_for(untrained_tiny_model, data, out, *ANCHORED, *extra, "--shared_trunk", shared, steps=2)
        rc, err = run_main(argv, capsys)
        assert rc == 0, err[-3000:]
        lines = (out / "adapter" / "metrics.jsonl").read_text().splitlines()
        losses[shared] = [json.loads(line)["loss"] for line in lines if '"loss"' in line]
        expected_layers = 1 if layers and shared == "true" else 0
        assert manifest(out)["shared_trunk_layers"] == expected_layers
    assert len(losses["true"]) == 2
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)
