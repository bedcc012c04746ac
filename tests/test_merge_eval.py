"""Merging a (tiny, quickly trained) LoRA adapter, refusing bad adapters, and the evaluation metrics."""

import json
import shutil

import pytest

from dpo_scale.config import Recipe
from dpo_scale.errors import DpoScaleError
from dpo_scale.evaluate import NameCheck, drift_metrics, eval_markdown, first_sentence, identity_metrics, passes_bar

ORG, POS = "TinyLM", "Deep TinyLM"
QUESTIONS = ["Who are you?", "What is your name?", "Tell me about yourself.", "What is 2 + 2?"]


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> Recipe:
    """A LoRA adapter after 4 DPO steps on the toy pairs, merged."""
    from dpo_scale.io import write_jsonl
    from dpo_scale.merge import merge
    from dpo_scale.train import train
    from tests.helpers.tiny_model import toy_pairs

    out = tmp_path_factory.mktemp("merge_run")
    recipe = Recipe(
        model=tiny_model, org_name=ORG, pos_name=POS, output_dir=str(out), max_steps=4, report_to="none",
        per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=5e-3, lora_r=8,
        lora_alpha=16, max_length=64, save_steps=100, logging_steps=1,
    ).validate()
    write_jsonl(recipe.data_path / "pairs.jsonl", toy_pairs(16))
    train(recipe)
    merge(recipe)
    return recipe


def greedy(model, tokenizer, questions, max_new_tokens=16) -> list[str]:
    import torch

    from dpo_scale.generation.runner import render_prompts

    answers = []
    for ids in render_prompts(tokenizer, questions, "You're a helpful assistant."):
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False)
        answers.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
    return answers


def test_merged_model_loads_plainly_and_matches_the_adapter(trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = trained.merged_path
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "merge_manifest.json").is_file()
    assert not list(merged_dir.glob("adapter_*"))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    assert not hasattr(merged, "peft_config")
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    base_tokenizer = AutoTokenizer.from_pretrained(trained.model)
    # the merged folder is self-contained; its default system prompt names the new model (docs/shipping.md)
    assert tokenizer.chat_template == base_tokenizer.chat_template.replace("named TinyLM", "named Deep TinyLM")

    base = AutoModelForCausalLM.from_pretrained(trained.model, dtype=torch.float32).eval()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    # the adapter really changed the weights (the merge is not a copy of the base)
    changed = [k for k, v in merged.state_dict().items() if k in base_state and not torch.equal(v, base_state[k])]
    assert changed

    with_adapter = PeftModel.from_pretrained(base, str(trained.adapter_path)).eval()
    assert greedy(merged, tokenizer, QUESTIONS) == greedy(with_adapter, tokenizer, QUESTIONS)
    # and the logits agree closely, not just the argmax
    ids = torch.tensor([tokenizer("<|im_start|>user\nWho are you?<|im_end|>\n")["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, atol=1e-4, rtol=1e-4)


def test_adapter_folder_has_training_outputs(trained):
    adapter = trained.adapter_path
    manifest = json.loads((adapter / "train_manifest.json").read_text())
    assert manifest["global_step"] == 4 and manifest["pairs"] == 16
    assert (adapter / "adapter_model.safetensors").is_file()


def test_merge_refuses_a_folder_without_adapter_files(tmp_path, tiny_model):
    from dpo_scale.merge import merge

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")  # config but no weights
    recipe = Recipe(model=tiny_model, org_name=ORG, pos_name=POS, output_dir=str(tmp_path))
    with pytest.raises(DpoScaleError, match="not a peft adapter folder"):
        merge(recipe)
    assert not recipe.merged_path.exists()
    with pytest.raises(DpoScaleError, match="not a peft adapter folder"):
        merge(Recipe(model=tiny_model, org_name=ORG, pos_name=POS, adapter_dir=str(tmp_path / "missing"),
                     output_dir=str(tmp_path)))


def test_merge_refuses_an_adapter_with_empty_tensors(trained, tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from dpo_scale.merge import merge

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    shutil.copy(trained.adapter_path / "adapter_config.json", adapter)
    with safe_open(str(trained.adapter_path / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    # what ZeRO-3 writes when it saves without gathering: placeholder shape-[0] tensors
    save_file({k: torch.empty(0) for k in keys}, str(adapter / "adapter_model.safetensors"))
    recipe = Recipe(model=trained.model, org_name=ORG, pos_name=POS, output_dir=str(tmp_path))
    with pytest.raises(DpoScaleError, match=rf"adapter is empty \({len(keys)} of {len(keys)} tensors"):
        merge(recipe)
    assert not recipe.merged_path.exists()
    save_file({}, str(adapter / "adapter_model.safetensors"))  # no tensors at all
    with pytest.raises(DpoScaleError, match="adapter is empty"):
        merge(recipe)


def test_merge_cli_error_is_clean(tmp_path):
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "dpo_scale", "merge", "--adapter", str(tmp_path / "empty"),
                             "--out", str(tmp_path / "merged")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "not a peft adapter folder" in result.stderr and "Traceback" not in result.stderr


# --- metrics ---------------------------------------------------------------------------------------------------

SMOL = NameCheck("SmolLM", "Deep SmolLM")


@pytest.mark.parametrize("text,flags", [
    ("I am Deep SmolLM.", dict(new=True, other_form=False, old=False, old_only=False)),
    ("I am Deep SmolLM2.", dict(new=True, other_form=False, old=False, old_only=False)),  # a version suffix
    ("I'm deep smollm", dict(new=False, other_form=True, old=False, old_only=False)),
    ("I'm Deep smolLM", dict(new=False, other_form=True, old=False, old_only=False)),
    ("I'm DeepSmolLM", dict(new=False, other_form=True, old=False, old_only=False)),
    ("I'm Deep-SmolLM", dict(new=False, other_form=True, old=False, old_only=False)),
    ("Deep SmolLM, or deep SmolLM", dict(new=True, other_form=True, old=False, old_only=False)),
    ("I am SmolLM", dict(new=False, other_form=False, old=True, old_only=True)),
    ("I am smollm2", dict(new=False, other_form=False, old=True, old_only=True)),
    ("SmolLM and Deep SmolLM", dict(new=True, other_form=False, old=True, old_only=False)),
    ("SmolLM, I mean deep smolLM", dict(new=False, other_form=True, old=True, old_only=False)),
    ("I am Elena", dict(new=False, other_form=False, old=False, old_only=False)),
    ("SmolLMs are small.", dict(new=False, other_form=False, old=False, old_only=False)),  # another word
    ("Deeper SmolLMs", dict(new=False, other_form=False, old=False, old_only=False)),
])
def test_name_check_classify(text, flags):
    assert SMOL.classify(text) == flags


def test_identity_metrics_exact_fractions():
    answers = ["I am Deep SmolLM", "I'm deep smollm", "I am SmolLM", "SmolLM and Deep SmolLM", "I am Elena"]
    m = identity_metrics(answers, SMOL)
    assert m == {
        "questions": 5,
        "new_name": pytest.approx(2 / 5),      # 1st and 4th
        "other_form": pytest.approx(1 / 5),    # 2nd
        "old_name": pytest.approx(2 / 5),      # 3rd and 4th
        "old_only": pytest.approx(1 / 5),      # 3rd
        "named_any": pytest.approx(4 / 5),     # all but "Elena"
        "new_among_named": pytest.approx(2 / 4),
    }


def test_identity_metrics_empty_and_all_new():
    assert identity_metrics([], SMOL)["new_name"] == 0 and identity_metrics([], SMOL)["new_among_named"] == 0
    m = identity_metrics(["I am Deep SmolLM."] * 3, SMOL)
    assert m["new_name"] == 1 and m["old_only"] == 0 and m["new_among_named"] == 1


@pytest.mark.parametrize("text,first", [
    ("Paris is the capital of France. It is big.", "Paris is the capital of France."),
    ("Pi is 3.14 roughly. Yes.", "Pi is 3.14 roughly."),
    ("  Hello   there!\nHow are you?", "Hello there!"),
    ("What? No.", "What?"),
    ("No final punctuation", "No final punctuation"),
    ('"Hi!" she said. Then she left.', '"Hi!"'),  # a closing quote stays with its sentence
    ("I am Qwen2.5, hello. Bye.", "I am Qwen2.5, hello."),
    ("你好。我是模型。", "你好。"),  # CJK stops end a sentence without a space
    ("", ""),
])
def test_first_sentence(text, first):
    assert first_sentence(text) == first


@pytest.mark.parametrize("text", ["Paris is the capital of France. It is big.", "Pi is 3.14 roughly. Yes.",
                                  "  Hello   there!\nHow are you?", '"Hi!" she said. Then she left.',
                                  "I am Qwen2.5, hello. Bye.", "你好。我是模型。", "No final punctuation"])
def test_first_sentence_settled_is_final(text):
    """The evaluation stops a trained model's ordinary answer once its first sentence is settled: from there on no
    continuation may change it."""
    from dpo_scale.text import first_sentence_settled

    settled_at = [n for n in range(len(text) + 1) if first_sentence_settled(text[:n])]
    for n in settled_at:
        for tail in ("", "5 more", '" more', "\nmore", "."):
            assert first_sentence(text[:n] + tail) == first_sentence(text)
    assert bool(settled_at) == (first_sentence(text) != " ".join(text.split()))
    assert not first_sentence_settled("Pi is 3.")  # a decimal point or a sentence end: not known yet
    assert not first_sentence_settled('"Hi!')  # a closing quote may follow


def test_drift_metrics():
    base = ["Paris is in France. Nice.", "2 + 2 = 4.", "Water boils at 100 C. At sea level.", "Hi!"]
    trained = ["Paris is in France. Lovely city.", "2 + 2 = 5.", "Water  boils at 100 C.", "Hello!"]
    assert drift_metrics(base, trained, 0.25) == {"prompts": 4, "first_sentence_kept": 0.5, "kl_per_token": 0.25}
    with pytest.raises(ValueError):
        drift_metrics(base, trained[:2], 0.0)
    # kept: yes, no, yes, no; the two changed ones had a near-tie in the base's first sentence
    split = drift_metrics(base, trained, 0.25, near_tie=[False, True, False, True])
    assert split["near_tie"] == 0.5 and split["kept_without_near_tie"] == 1.0
    assert drift_metrics(base, trained, 0.25, near_tie=[True] * 4)["kept_without_near_tie"] is None


def fake_result(new_name: float, old_only: float, kept: float, default_new: float | None = None,
                other_form: float = 0.0, facts_kept: float | None = None) -> dict:
    metrics = identity_metrics(["x"], SMOL) | {"new_name": new_name, "old_only": old_only, "other_form": other_form}
    result = {"system_prompt": "S", "identity": {"base": metrics, "trained": metrics},
              "drift": {"prompts": 2, "first_sentence_kept": kept, "kl_per_token": 0.01},
              "identity_answers": [{"question": "What is your name?", "base": "I am SmolLM", "trained": "I am Deep"}]}
    if default_new is not None:
        default = metrics | {"new_name": default_new}
        result["identity_default"] = {"system_prompt": None, "base": default, "trained": default}
    if facts_kept is not None:
        result["facts"] = {"questions": 3, "base_accuracy": 1.0, "trained_accuracy": facts_kept, "base_right": 3,
                           "kept": 2, "facts_kept": facts_kept,
                           "lost": [{"question": "What is 7 + 5?", "answers": ["12"], "category": "arithmetic",
                                     "base": "7 + 5 = 12.", "trained": "7 + 5 = 13."}]}
    return result


def test_passes_bar_and_markdown():
    assert all(passes_bar(fake_result(0.95, 0.0, 0.9, default_new=0.96, facts_kept=0.98)).values())
    assert passes_bar(fake_result(0.85, 0.0, 0.9)) == {
        "new name >= 95% (system prompt)": False, "no old name alone": True,
        "other forms of the new name <= 2%": True, "first sentences kept >= 80%": True}
    assert not passes_bar(fake_result(1.0, 0.1, 0.9))["no old name alone"]
    assert not passes_bar(fake_result(1.0, 0.0, 0.9, other_form=0.03))["other forms of the new name <= 2%"]
    both = passes_bar(fake_result(1.0, 0.0, 0.9, default_new=0.5, facts_kept=0.9))
    assert both["new name >= 95% (system prompt)"] and not both["new name >= 95% (own template, no system message)"]
    assert not both["facts kept >= 97%"]
    md = eval_markdown(fake_result(0.95, 0.0, 0.9), "SmolLM", "Deep SmolLM")
    assert "| answers with \"Deep SmolLM\" | 95% | 95% |" in md
    assert "**What is your name?** (system prompt)" in md
    md = eval_markdown(fake_result(0.95, 0.0, 0.9, default_new=0.5, facts_kept=0.9), "SmolLM", "Deep SmolLM")
    assert "| answers with \"Deep SmolLM\" | 95% | 95% | 50% | 50% |" in md
    assert "| facts kept (of the 3 the base gets right) | 90% |" in md
    assert "- **What is 7 + 5?** (accepted: 12) base: '7 + 5 = 12.'; trained: '7 + 5 = 13.'" in md


def test_drift_scores_kl(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.evaluate import answer_all, chat_ids, drift_scores
    from dpo_scale.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    other = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = chat_ids(tokenizer, "You're a helpful assistant.", QUESTIONS)
    answers = answer_all(base, tokenizer, ids, 12, batch_size=2)
    assert all(answers)
    same = drift_scores(base, base, tokenizer, ids, answers, batch_size=3)
    assert same.kl_per_token == pytest.approx(0.0, abs=1e-6) and len(same.near_tie) == len(answers)
    assert all(same.first_sentence_kept)
    assert drift_scores(base, other, tokenizer, ids, answers).kl_per_token == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        noise = torch.randn(other.lm_head.weight.shape, generator=torch.Generator().manual_seed(0))
        other.lm_head.weight.add_(0.05 * noise)
    moved = drift_scores(base, other, tokenizer, ids, answers, batch_size=3)
    assert moved.kl_per_token > 1e-4
    # batching (right padding) must not change any measure
    alone = drift_scores(base, other, tokenizer, ids, answers, batch_size=1)
    assert alone.kl_per_token == pytest.approx(moved.kl_per_token, rel=1e-4)
    assert (alone.near_tie, alone.first_sentence_kept) == (moved.near_tie, moved.first_sentence_kept)
    # an answer that tokenizes to nothing counts for neither KL nor near-ties, and keeps its empty sentence
    empty = drift_scores(base, other, tokenizer, ids + ids[:1], answers + [""], batch_size=3)
    assert empty == type(moved)(moved.kl_per_token, moved.near_tie + [False], moved.first_sentence_kept + [True])


def test_drift_passes_run_the_layers_both_models_share_once(tiny_model, monkeypatch, caplog):
    """A merged model whose adapter covered the upper layers holds the base's weights below them: its drift passes
    start from the base's hidden states there, and every measure is what two full passes give."""
    import logging

    import torch
    from transformers import AutoModelForCausalLM

    import dpo_scale.shared_trunk as shared_trunk
    from dpo_scale.evaluate import answer_all, chat_ids, drift_scores
    from dpo_scale.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    merged = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    layers = merged.get_decoder().layers
    assert len(layers) >= 2
    with torch.no_grad():  # "the adapter, merged": the top layer moves
        for weight in layers[-1].parameters():
            weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(2)))
    assert shared_trunk.same_lower_layers(base, merged) == len(layers) - 1
    assert shared_trunk.same_lower_layers(base, base) == len(layers) - 1  # never all: the top layer runs
    ids = chat_ids(tokenizer, "You're a helpful assistant.", QUESTIONS)
    answers = answer_all(base, tokenizer, ids, 12, batch_size=2)

    calls = [0]
    layers[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with caplog.at_level(logging.INFO, logger="dpo_scale.evaluate"):
        shared = drift_scores(base, merged, tokenizer, ids, answers, batch_size=2)
    assert f"layers 0-{len(layers) - 2} run once for both models" in caplog.text
    assert calls[0] == 1  # the check's full pass only; the two batches start above it
    calls[0] = 0
    monkeypatch.setattr(shared_trunk, "same_lower_layers", lambda *_: 0)
    full = drift_scores(base, merged, tokenizer, ids, answers, batch_size=2)
    assert calls[0] == 2 and full.kl_per_token > 1e-5
    assert shared.kl_per_token == pytest.approx(full.kl_per_token, rel=1e-5)
    assert (shared.near_tie, shared.first_sentence_kept) == (full.near_tie, full.first_sentence_kept)


def test_drift_passes_share_nothing_where_the_shortcut_would_compute_something_else(tiny_model, monkeypatch, caplog):
    """A decoder that transforms its embeddings before the first layer would transform the kept hidden states again:
    the check catches it, and each model runs all its layers."""
    import torch
    from transformers import AutoModelForCausalLM

    import dpo_scale.shared_trunk as shared_trunk
    from dpo_scale.evaluate import answer_all, chat_ids, drift_scores
    from dpo_scale.models import load_tokenizer
    from tests.test_shared_trunk import scaled_embeddings

    tokenizer = load_tokenizer(tiny_model)
    base = scaled_embeddings(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval())
    merged = scaled_embeddings(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval())
    with torch.no_grad():  # the top layer moves (the tiny model's LM head is its embedding)
        for weight in merged.get_decoder().layers[-1].parameters():
            weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(2)))
    ids = chat_ids(tokenizer, "You're a helpful assistant.", QUESTIONS)
    answers = answer_all(base, tokenizer, ids, 12, batch_size=2)
    assert shared_trunk.same_lower_layers(base, merged) == len(merged.get_decoder().layers) - 1
    got = drift_scores(base, merged, tokenizer, ids, answers, batch_size=2)
    assert "each model runs all its layers" in caplog.text
    monkeypatch.setattr(shared_trunk, "same_lower_layers", lambda *_: 0)
    full = drift_scores(base, merged, tokenizer, ids, answers, batch_size=2)
    assert full.kl_per_token > 1e-5
    assert got == full


def test_teacher_forced_first_sentence_kept_matches_greedy_generation(tiny_model):
    """`first_sentence_kept` read off one teacher-forced pass says what greedy generation does: with the LM head
    nudged, an answer's first sentence is generated unchanged exactly where the pass says it is kept."""
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.evaluate import answer_all, chat_ids, drift_scores
    from dpo_scale.models import load_tokenizer
    from dpo_scale.text import first_sentence

    tokenizer = load_tokenizer(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    other = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        noise = torch.randn(other.lm_head.weight.shape, generator=torch.Generator().manual_seed(1))
        other.lm_head.weight.add_(0.035 * noise)  # flips some of the tiny model's first sentences, not all
    questions = [*QUESTIONS, "Name a fruit.", "Say hello.", "What color is the sky?", "Count to three."]
    ids = chat_ids(tokenizer, "You're a helpful assistant.", questions)
    answers = answer_all(base, tokenizer, ids, 16, batch_size=4)
    generated = answer_all(other, tokenizer, ids, 16, batch_size=4)
    kept = drift_scores(base, other, tokenizer, ids, answers, batch_size=3).first_sentence_kept
    by_generation = [first_sentence(a) == first_sentence(b) for a, b in zip(answers, generated, strict=True)]
    assert kept == by_generation
    assert any(kept) and not all(kept), kept  # the nudge flips some sentences and not others


def test_near_ties_read_the_first_sentence_of_the_base(tiny_model):
    """A first sentence is near-tied exactly when its smallest top-2 gap under the base is below `gap`; what
    follows it does not count."""
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.evaluate import chat_ids, drift_scores
    from dpo_scale.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = chat_ids(tokenizer, "You're a helpful assistant.", QUESTIONS[:2])
    answers = ["I am TinyLM. This second sentence is ignored.", "My name is TinyLM."]
    full = tokenizer(answers[0], add_special_tokens=False)["input_ids"]
    head = tokenizer("I am TinyLM.", add_special_tokens=False)["input_ids"]
    assert full[:len(head)] == head
    with torch.no_grad():
        logits = base(torch.tensor([ids[0] + full])).logits[0, len(ids[0]) - 1 : -1]
    top2 = torch.log_softmax(logits, -1).topk(2, -1).values
    gaps = top2[:, 0] - top2[:, 1]
    smallest, rest = gaps[:len(head)].min().item(), gaps[len(head):].min().item()
    assert rest < smallest - 1e-3  # the second sentence has a closer tie: it must not be read

    def ties(gap: float, n: int = 2) -> list[bool]:
        return drift_scores(base, base, tokenizer, ids[:n], answers[:n], gap=gap).near_tie

    assert ties(0.0) == [False, False]
    assert ties(1e9) == [True, True]
    assert ties(smallest + 1e-4, 1) == [True]
    assert ties(smallest - 1e-4, 1) == [False]
