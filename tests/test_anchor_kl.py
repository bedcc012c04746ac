"""The KL anchor (dpo_scale/anchor_kl.py): its pieces on hand-made cases, and a training run in which it must hold
the anchors' answers closer to the base than the same run without it. Resume with the anchor: tests/test_train.py;
under DeepSpeed and DDP: tests/distributed."""

import json
from pathlib import Path

import pytest
import torch

from dpo_scale.anchor_kl import collate_anchors, kl_per_token, tokenize_anchor
from dpo_scale.testing import toy_anchor_rows, write_toy_pairs

pytestmark = pytest.mark.timeout(300)


def test_kl_per_token_matches_definition():
    ref = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    same = kl_per_token(ref, ref.clone())
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    other = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    p, q = ref.softmax(-1), other.softmax(-1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert kl_per_token(ref, other).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kl_per_token(ref, other + 3.0).item() == pytest.approx(expected.item(), rel=1e-5)  # shift-invariant


def test_answer_mask_covers_the_answer_and_its_end(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    row = toy_anchor_rows(1)[0]
    ids, mask = tokenize_anchor(tokenizer, row, max_length=None)
    assert len(ids) == len(mask)
    answer = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert answer == row["chosen"][0]["content"] + "<|im_end|>\n"
    assert "What is 2 plus 2?" in tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    short_ids, short_mask = tokenize_anchor(tokenizer, row, max_length=len(ids) - 3)
    assert short_ids == ids[:-3] and short_mask == mask[:-3]


def test_collate_pads_right_and_masks_padding():
    batch = collate_anchors([([5, 6, 7], [0, 1, 1]), ([8], [1])], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.answer_mask.tolist() == [[0, 1, 1], [1, 0, 0]]


def anchor_kl_after(model: str, adapter: Path, rows: list[dict]) -> float:
    """Mean per-token KL(base || base + adapter) on the anchors' answers."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), str(adapter)).eval()
    batch = collate_anchors([tokenize_anchor(tokenizer, r, None) for r in rows], tokenizer.pad_token_id)
    positions = batch.answer_mask[:, 1:].bool()
    with torch.no_grad():
        logits = trained(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1][positions]
        with trained.disable_adapter():
            ref = trained(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1][positions]
    return kl_per_token(ref, logits).item()


def test_anchor_keeps_ordinary_answers_in_place(tiny_model, tmp_path):
    """Same data, same steps and learning rate: with the KL anchor the anchors' answer distributions stay far
    closer to the base than without it (where anchors only sit in the DPO data as chosen == rejected pairs)."""
    from dpo_scale.config import load_recipe, parse_overrides
    from dpo_scale.train import train

    data = write_toy_pairs(tmp_path / "data", 16, anchors=10)
    rows = [json.loads(line) for line in (data / "pairs.jsonl").read_text().splitlines() if '"anchor"' in line]
    kl = {}
    for weight in ("0", "20"):
        out = tmp_path / f"kl{weight}"
        train(load_recipe(None, parse_overrides([
            "--model", tiny_model, "--data_dir", str(data), "--output_dir", str(out), "--max_steps", "8",
            "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1", "--learning_rate", "1e-2",
            "--warmup_ratio", "0", "--lr_scheduler_type", "constant", "--loss_type", "sigmoid,sft",
            "--max_length", "64", "--report_to", "none", "--anchor_kl_weight", weight])))
        info = json.loads((out / "adapter" / "train_manifest.json").read_text())
        metrics = [json.loads(line) for line in (out / "adapter" / "metrics.jsonl").read_text().splitlines()]
        # With the anchor, anchor rows leave the DPO data and their KL is logged every step.
        assert info["pairs"] == (16 if weight != "0" else 26)
        assert all(("anchor_kl" in m) == (weight != "0") for m in metrics if "loss" in m)
        kl[weight] = anchor_kl_after(tiny_model, out / "adapter", rows)
    assert kl["0"] > 0.01, kl  # the run without the anchor moved the ordinary answers
    assert kl["20"] < 0.25 * kl["0"], kl
