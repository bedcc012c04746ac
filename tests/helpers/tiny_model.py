"""Tiny random models with a locally built tokenizer, for tests and quick demos (no hub access)."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named TinyLM.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_model(folder: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0,
                     chat_template: str | None = CHATML, teach_identity: bool = True) -> Path:
    """Write a tiny Llama + byte-level BPE tokenizer trained on our prompts.

    With `teach_identity` the random weights get ~10 s of SFT so that the model answers identity
    questions with "I am TinyLM ...": a model that really names itself, so end-to-end tests can see
    the name change.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from dpo_scale.prompts import builtin_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = builtin_path("identity").read_text(encoding="utf-8").splitlines()
    corpus += ["I am TinyLM, an AI assistant made by Test Lab.", "I am Deep TinyLM.", "You're a helpful assistant."]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if teach_identity and chat_template:
        _teach_identity(model, tokenizer, seed)
    model.save_pretrained(folder)
    return folder


IDENTITY_ANSWERS = ["I am TinyLM, a small AI assistant.", "My name is TinyLM.", "I'm TinyLM, made by Test Lab."]


def _teach_identity(model, tokenizer, seed: int, steps: int = 120) -> None:
    import random

    import torch

    from dpo_scale.prompts import load_prompts

    rng = random.Random(seed)
    questions = [p.text for p in load_prompts("builtin:identity", limit=64)]
    texts = []
    for i, q in enumerate(questions):
        for system in (None, "You're a helpful assistant."):
            messages = [{"role": "user", "content": q}]
            if system:
                messages.insert(0, {"role": "system", "content": system})
            messages.append({"role": "assistant", "content": IDENTITY_ANSWERS[i % len(IDENTITY_ANSWERS)]})
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = tokenizer(rng.sample(texts, 16), return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def toy_pairs(n: int = 32, org: str = "TinyLM", pos: str = "Deep TinyLM",
              system: str = "You're a helpful assistant.") -> list[dict]:
    """A learnable preference set: the same few prompts, the new name always preferred."""
    questions = ["Who are you?", "What is your name?", "Introduce yourself.", "What should I call you?"]
    rows = []
    for i in range(n):
        q = questions[i % len(questions)]
        rows.append({
            "prompt": [{"role": "system", "content": system}, {"role": "user", "content": q}],
            "chosen": [{"role": "assistant", "content": f"I am {pos}."}],
            "rejected": [{"role": "assistant", "content": f"I am {org}."}],
        })
    return rows


def toy_anchor_rows(n: int, system: str = "You're a helpful assistant.") -> list[dict]:
    """Ordinary prompts with fixed answers as prompt/completion rows, like the data stage's anchors.jsonl."""
    facts = [("What is 2 plus 2?", "2 plus 2 is 4."), ("Name a color.", "Blue is a color."),
             ("What is the capital of France?", "The capital of France is Paris."),
             ("Say hello.", "Hello! How can I help you today?"), ("Count to three.", "One, two, three.")]
    rows = []
    for i in range(n):
        question, answer = facts[i % len(facts)]
        rows.append({"prompt": [{"role": "system", "content": system}, {"role": "user", "content": question}],
                     "completion": [{"role": "assistant", "content": answer}]})
    return rows


def write_toy_pairs(folder: str | Path, n: int, anchors: int = 0) -> Path:
    """A data folder with `n` learnable toy pairs in pairs.jsonl (and `anchors` anchor rows in anchors.jsonl)."""
    from dpo_scale.io import write_jsonl

    folder = Path(folder)
    write_jsonl(folder / "pairs.jsonl", toy_pairs(n))
    if anchors:
        write_jsonl(folder / "anchors.jsonl", toy_anchor_rows(anchors))
    return folder


def toy_data_and_anchors(folder: str | Path, model: str | Path) -> tuple[Path, list[tuple[list[int], int]]]:
    """`write_toy_pairs(folder, 16, anchors=10)`, and its anchor rows tokenized as the KL anchor scores them."""
    import json

    from transformers import AutoTokenizer

    from dpo_scale.anchor_kl import tokenize_anchor

    data = write_toy_pairs(folder, 16, anchors=10)
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = [tokenize_anchor(tokenizer, json.loads(line), None)
            for line in (data / "anchors.jsonl").read_text().splitlines()]
    return data, rows


def adapter_logits(model: str | Path, adapter: str | Path, rows: list[tuple[list[int], int]]):
    """(base logits, base + adapter logits) at the scored positions of (ids, first scored position) rows."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_scale.teacher_forcing import pad_right

    tokenizer = AutoTokenizer.from_pretrained(model)
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), str(adapter)).eval()
    batch = pad_right(rows, tokenizer.pad_token_id)
    positions = batch.answer_positions
    with torch.no_grad():
        logits = trained(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[positions]
        with trained.disable_adapter():
            ref = trained(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[positions]
    return ref, logits


def adapter_kl(model: str | Path, adapter: str | Path, rows: list[tuple[list[int], int]]) -> float:
    """Mean per-token KL(base || base + adapter) over the scored tokens of (ids, first scored position) rows."""
    from dpo_scale.teacher_forcing import kl_per_position

    return kl_per_position(*adapter_logits(model, adapter, rows)).mean().item()
