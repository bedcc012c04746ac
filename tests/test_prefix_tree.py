"""Prefix trees: a batch's shared tokens run once, attention runs per sequence, and every logit and gradient is the
one the sequence gets in a padded row of its own."""

from types import SimpleNamespace

import pytest
import torch

from dpo_scale.errors import DpoScaleError
from dpo_scale.prefix_tree import TREE_ATTENTION, pack_tree, tree_attention
from dpo_scale.teacher_forcing import answer_logits, pad_right
from tests.helpers.gradients import assert_same_gradients

OPENING = [11, 12, 13, 14, 15, 16]  # what a chat template puts before every user turn


def rows_with_a_common_opening() -> list[tuple[list[int], int]]:
    """(prompt + answer ids, prompt length): four rows after one opening, the last a copy of the first."""
    g = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(20, 120, (n,), generator=g).tolist()

    rows = [(OPENING + ids(4), ids(7)), (OPENING + ids(9), ids(3)), (OPENING + ids(2), ids(12))]
    rows.append(rows[0])
    return [(prompt + answer, len(prompt)) for prompt, answer in rows]


def test_pack_tree_places_shared_tokens_once_and_splits_where_labels_differ():
    a, b = [1, 2, 3, 4], [1, 2, 5]
    # position 1 (token 2) predicts 3 in a and 5 in b: read in both, so it is placed once per branch
    tree = pack_tree([a, b], [[None, 3, 4, None], [None, 5, None]])
    assert tree.paths[0, 0] == tree.paths[1, 0]  # token 1: nothing read, shared
    assert tree.paths[0, 1] != tree.paths[1, 1]  # token 2: two labels, two nodes
    assert tree.input_ids.shape == (1, 6)
    assert tree.paths[1, 3] == -1  # past the shorter sequence's end
    assert torch.equal(tree.position_ids[0, tree.paths[0]], torch.arange(4))
    assert torch.equal(tree.input_ids[0, tree.paths[0]], torch.tensor(a))
    assert tree.shift_labels[0, tree.paths[1, 1]] == 5
    # unread, the same two sequences share their first two tokens
    assert pack_tree([a, b], [[None] * 4, [None] * 3]).input_ids.shape == (1, 5)


def test_packed_logits_and_gradients_equal_padded_rows(untrained_tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(untrained_tiny_model, attn_implementation="eager",
                                                 dtype=torch.float32)
    torch.manual_seed(0)  # the adapter's random initialization
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                             init_lora_weights=False))
    batch = pad_right(rows_with_a_common_opening(), 0)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda _m, _a, out: seen.append(out.shape[1]))
    packed = answer_logits(model, batch, torch.device("cpu"), packed=True)
    plain = answer_logits(model, batch, torch.device("cpu"))
    hook.remove()
    assert packed.shape == plain.shape
    answers_of_the_copy = int(batch.answer_positions[3].sum())
    assert seen == [int(batch.answer_positions.sum()) - answers_of_the_copy, int(batch.answer_positions.sum())]
    torch.testing.assert_close(packed, plain, atol=2e-5, rtol=1e-4)
    assert_same_gradients(model, packed, plain, seed=1)
    assert model.get_base_model().config._attn_implementation == "eager"  # switched back


def test_kl_batches_fall_back_to_padded_rows_when_the_packed_forward_differs(untrained_tiny_model, caplog):
    """The trainer checks its first packed KL batch against padded rows: a model whose attention the tree does not
    reproduce (here: a broken tree attention) trains on padded rows, with a warning."""
    from transformers import AttentionInterface, AutoModelForCausalLM

    from dpo_scale.anchor_kl import AnchoredDPOTrainer

    model = AutoModelForCausalLM.from_pretrained(untrained_tiny_model, attn_implementation="eager",
                                                 dtype=torch.float32)
    batch = pad_right(rows_with_a_common_opening(), 0)
    trainer = SimpleNamespace(packed_kl=True, _packed_checked=False,
                              accelerator=SimpleNamespace(device=torch.device("cpu")))

    def scaled(*args, **kwargs):
        out, weights = tree_attention(*args, **kwargs)
        return out * 1.5, weights

    AttentionInterface.register(TREE_ATTENTION, scaled)
    try:
        logits = AnchoredDPOTrainer._answer_logits(trainer, model, batch)
    finally:
        AttentionInterface.register(TREE_ATTENTION, tree_attention)
    assert trainer.packed_kl is False
    assert "differs from padded rows" in caplog.text
    torch.testing.assert_close(logits, answer_logits(model, batch, torch.device("cpu")))
    # and a correct tree passes the check and stays on
    trainer = SimpleNamespace(packed_kl=True, _packed_checked=False,
                              accelerator=SimpleNamespace(device=torch.device("cpu")))
    AnchoredDPOTrainer._answer_logits(trainer, model, batch)
    assert trainer.packed_kl is True


def test_tree_attention_refuses_what_it_does_not_implement():
    q = torch.zeros(1, 2, 3, 4)
    paths = torch.tensor([[0, 1, 2]])[None, None]
    with pytest.raises(DpoScaleError, match="sliding_window"):
        tree_attention(None, q, q, q, paths, sliding_window=2)
    with pytest.raises(DpoScaleError, match="without a tree"):
        tree_attention(None, q, q, q, torch.zeros(1, 1, 3, 3))
