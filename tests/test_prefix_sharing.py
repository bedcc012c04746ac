"""Prefix sharing runs each DPO pair as one packed row: what TRL reads from the forward (per-token log-probs,
entropy, mean logits, top-1 hits) and the gradients must be those of TRL's own [chosen; rejected] rows."""

import pytest
import torch
from trl.data_utils import common_prefix_length

from dpo_scale.prefix_sharing import pack_pairs, right_padded_lengths, share_pair_prefixes

FIELDS = ("log_probs", "entropy", "mean_logits", "is_top1")


def preference_batch() -> dict:
    """A batch as TRL's preference collator builds it: pairs that part in the middle, one whose chosen answer is a
    prefix of its rejected one, one with equal answers, different lengths (right padding)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    g = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(5, 200, (n,), generator=g).tolist()

    prompt_a, prompt_b, prompt_c, prompt_d = ids(9), ids(5), ids(12), ids(7)
    opening, rest = ids(3), ids(6)
    examples = [
        {"prompt_ids": prompt_a, "chosen_ids": opening + [201, 202] + rest, "rejected_ids": opening + [203] + rest},
        {"prompt_ids": prompt_b, "chosen_ids": opening + [210], "rejected_ids": opening + [210, 211, 212]},
        {"prompt_ids": prompt_c, "chosen_ids": rest + [7], "rejected_ids": rest + [7]},
        {"prompt_ids": prompt_d, "chosen_ids": [220] + rest, "rejected_ids": [221] + rest[:2]},
    ]
    return DataCollatorForPreference(pad_token_id=0)(examples)


def fused_model(path: str, attention: str, share: bool):
    from transformers import AutoModelForCausalLM
    from trl.trainer import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attention, dtype=torch.float32)
    add_fused_lm_head(model, outputs=FIELDS)  # as DPOTrainer does
    if share:
        assert share_pair_prefixes(model)
    return model


def forward(model, batch: dict):
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)  # as DPOTrainer builds them
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                 use_cache=False, fused_lm_head=True)


def test_packing_places_the_shared_prefix_once():
    """One tree for the batch: the rejected answer's positions up to its last shared token read the chosen answer's
    nodes, its later ones nodes of its own at its own positions, and a batch opening (a chat template's system
    block) is placed once for all pairs."""
    batch = preference_batch()
    opening = [3, 4, 5, 6, 7]
    rows = batch["input_ids"].shape[0]
    ids = torch.cat([torch.tensor(opening).expand(rows, -1), batch["input_ids"]], dim=1)
    mask = torch.cat([torch.ones(rows, len(opening), dtype=torch.long), batch["attention_mask"]], dim=1)
    completion = torch.cat([torch.zeros(rows, len(opening), dtype=torch.long), batch["completion_mask"]], dim=1)
    labels = ids.masked_fill(completion == 0, -100)
    lengths = right_padded_lengths(mask)
    packed = pack_pairs(ids, labels, lengths)
    tree = packed.tree
    assert tree.input_ids.shape[0] == 1
    pairs = rows // 2
    for i in range(pairs):
        n_c, n_r = int(lengths[i]), int(lengths[pairs + i])
        shared = common_prefix_length(ids[i, :n_c].tolist(), ids[pairs + i, :n_r].tolist())
        same = ids[i, :n_c].tolist() == ids[pairs + i, :n_r].tolist()
        last = shared if same else shared - 1  # the last shared token: once per branch where they part
        assert torch.equal(packed.source[pairs + i, :last], packed.source[i, :last])
        if not same:
            own = packed.source[pairs + i, last : n_r - 1]
            assert not set(own.tolist()) & set(packed.source[i, : n_c - 1].tolist())
            assert torch.equal(tree.position_ids[0, own], torch.arange(last, n_r - 1))
        assert torch.equal(tree.input_ids[0, packed.source[i, : n_c - 1]], ids[i, : n_c - 1])
    # the opening's nodes are the same for every row: placed once
    assert len(set(packed.source[:, : len(opening)].flatten().tolist())) == len(opening)
    assert tree.input_ids.numel() < ids[0].numel() * pairs


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_forward_matches_trls_two_rows(untrained_tiny_model, attention):
    batch = preference_batch()
    plain, shared = (fused_model(untrained_tiny_model, attention, share) for share in (False, True))
    expected, got = forward(plain, batch), forward(shared, batch)
    for field in FIELDS:
        assert got[field].shape == expected[field].shape
        if field == "is_top1":
            assert torch.equal(got[field], expected[field])
        else:
            torch.testing.assert_close(got[field], expected[field], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got["loss"], expected["loss"])
    # the same gradients: the shared tokens' two uses in TRL's rows add up in the one packed copy
    weights = torch.linspace(0.5, 1.5, expected["log_probs"].numel()).view_as(expected["log_probs"])
    (expected["log_probs"] * weights).sum().backward()
    (got["log_probs"] * weights).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), shared.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_other_calls_go_through_unpacked(untrained_tiny_model):
    """The KL anchors and generation call the model without the fused head: plain logits, as before."""
    batch = preference_batch()
    plain, shared = (fused_model(untrained_tiny_model, "eager", share) for share in (False, True))
    with torch.no_grad():
        a = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = shared(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(a, b)


def test_dpo_trainer_loss_and_metrics_unchanged(untrained_tiny_model, tmp_path):
    """Through build_trainer (peft adapter, reference = adapter off, name window): the same DPO loss and TRL metrics
    with and without prefix sharing, and the run records it."""
    from accelerate import PartialState

    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.train import build_trainer
    from tests.helpers.tiny_model import write_toy_pairs

    data = write_toy_pairs(tmp_path / "data", 8)
    runs = {}
    for share in (False, True):
        argv = ["--model", untrained_tiny_model, "--data_dir", str(data), "--output_dir", str(tmp_path / str(share)),
                "--max_steps", "1", "--per_device_train_batch_size", "4", "--max_length", "64", "--report_to", "none",
                "--name_window_tokens", "2", "--model_init_kwargs", '{"attn_implementation": "eager"}',
                "--dtype", "float32", "--prefix_sharing", str(share).lower()]
        runs[share] = build_trainer(load_recipe(None, parse_overrides(argv)), PartialState())
    assert runs[True].shares_prefixes and not runs[False].shares_prefixes
    plain, shared = runs[False].trainer, runs[True].trainer
    shared.model.load_state_dict(plain.model.state_dict())
    with torch.no_grad():  # a nonzero adapter, so that policy and reference differ
        for name, p in plain.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05)
        shared.model.load_state_dict(plain.model.state_dict())
    batch = plain.data_collator([plain.train_dataset[i] for i in range(4)])
    for trainer in (plain, shared):
        trainer.model.train()
    losses = [trainer.compute_loss(trainer.model, batch) for trainer in (plain, shared)]
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "mean_token_accuracy"):
        assert shared._metrics["train"][key][-1] == pytest.approx(plain._metrics["train"][key][-1], abs=1e-4), key


def test_packing_turns_itself_off_where_the_packed_forward_differs(untrained_tiny_model, caplog):
    """The first packed DPO batch is checked against TRL's rows: with a tree attention that gets the model wrong
    (here: scaled outputs), the batch and every later one run as TRL runs them, with a warning."""
    from transformers import AttentionInterface

    from dpo_scale.prefix_tree import TREE_ATTENTION, tree_attention

    def scaled(*args, **kwargs):
        out, weights = tree_attention(*args, **kwargs)
        return out * 1.5, weights

    batch = preference_batch()
    plain, shared = (fused_model(untrained_tiny_model, "eager", share) for share in (False, True))
    AttentionInterface.register(TREE_ATTENTION, scaled)
    try:
        got = [forward(shared, batch) for _ in range(2)]
    finally:
        AttentionInterface.register(TREE_ATTENTION, tree_attention)
    assert "differs from TRL's rows" in caplog.text
    expected = forward(plain, batch)
    for out in got:
        torch.testing.assert_close(out["log_probs"], expected["log_probs"])
