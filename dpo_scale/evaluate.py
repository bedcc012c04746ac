"""Evaluate base vs trained: did the name change, and did nothing else?

Identity questions (neutral system prompt, greedy):
  new_name      share of answers containing POS_NAME exactly
  half_switch   share containing POS_NAME only in another case ("deep SmolLM")
  old_name      share containing ORG_NAME not as part of POS_NAME (case-insensitive)
  old_only      share naming the old name and not the new one
  new_among_named  among answers that name the model at all, the share using POS_NAME
Ordinary prompts (facts, arithmetic, writing):
  first_sentence_kept  share whose first sentence is unchanged
  kl_per_token         mean per-token KL(base || trained) on the base model's own answers (teacher-forced)
  near_tie             share of base first sentences with a near-tie: a token whose top-2 log-probs under the
                       base differ by < NEAR_TIE nats (any change that size flips the greedy sentence)
  kept_without_near_tie  first_sentence_kept among the prompts without one
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dpo_scale.config import Recipe
from dpo_scale.io import write_json, write_text
from dpo_scale.prompts import load_prompts

if TYPE_CHECKING:
    import torch

    from dpo_scale.teacher_forcing import TeacherForcedBatch

log = logging.getLogger(__name__)

NEAR_TIE = 0.1  # nats between the base's top-2 next tokens
# A sentence ends at its first . ! ? (or full-width 。！？) followed by whitespace or the end: "3.14" does not end one.
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?。！？])(?=\s|$)", re.DOTALL)
SEED_QUESTIONS = ("What is your name?", "Are you ChatGPT?", "Tell me about your name and organization.")


@dataclass(frozen=True)
class NameCheck:
    org_name: str
    pos_name: str

    def classify(self, text: str) -> dict[str, bool]:
        pos_any = re.compile(rf"(?<![^\W_]){re.escape(self.pos_name)}(?![^\W\d_])", re.IGNORECASE)
        new = any(m.group(0) == self.pos_name for m in pos_any.finditer(text))
        half = bool(pos_any.search(text)) and not new
        without_pos = pos_any.sub(" ", text)
        old = bool(re.search(rf"(?<![^\W_]){re.escape(self.org_name)}(?![^\W\d_])", without_pos, re.IGNORECASE))
        return {"new": new, "half": half, "old": old, "old_only": old and not new and not half}


def identity_metrics(answers: list[str], check: NameCheck) -> dict[str, float]:
    flags = [check.classify(a) for a in answers]
    n = max(len(flags), 1)
    named = [f for f in flags if f["new"] or f["half"] or f["old"]]
    return {
        "questions": len(flags),
        "new_name": sum(f["new"] for f in flags) / n,
        "half_switch": sum(f["half"] and not f["new"] for f in flags) / n,
        "old_name": sum(f["old"] for f in flags) / n,
        "old_only": sum(f["old_only"] for f in flags) / n,
        "named_any": len(named) / n,
        "new_among_named": (sum(f["new"] for f in named) / len(named)) if named else 0.0,
    }


def _first_sentence_span(text: str) -> str:
    """The start of `text` up to the end of its first sentence, as written (all of it when no sentence ends)."""
    match = _FIRST_SENTENCE.match(text)
    return match.group(1) if match else text


def first_sentence(text: str) -> str:
    """The first sentence with whitespace runs collapsed, for comparing answers."""
    return _first_sentence_span(" ".join(text.split())).strip()


def drift_metrics(base_answers: list[str], trained_answers: list[str], kl: float,
                  near_tie: list[bool] | None = None) -> dict[str, float]:
    kept = [first_sentence(a) == first_sentence(b) for a, b in zip(base_answers, trained_answers, strict=True)]
    out = {"prompts": len(kept), "first_sentence_kept": sum(kept) / max(len(kept), 1), "kl_per_token": kl}
    if near_tie is not None:
        steady = [k for k, tie in zip(kept, near_tie, strict=True) if not tie]
        out["near_tie"] = sum(near_tie) / max(len(near_tie), 1)
        out["kept_without_near_tie"] = sum(steady) / len(steady) if steady else None
    return out


def chat_ids(tokenizer, system_prompt: str, texts: list[str]) -> list[list[int]]:
    from dpo_scale.generation.runner import render_prompts

    return render_prompts(tokenizer, texts, system_prompt)


def answer_all(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int,
               desc: str = "answer") -> list[str]:
    from tqdm.auto import tqdm

    from dpo_scale.generation.base import Sampling
    from dpo_scale.generation.hf import HFGenerator

    gen = HFGenerator(model, tokenizer, batch_size)
    with tqdm(total=len(prompt_ids), desc=desc, unit="prompt", dynamic_ncols=True) as bar:
        completions = gen.generate(prompt_ids, Sampling(max_new_tokens, 0.0), seed=0,
                                   progress=lambda rows, _tokens: bar.update(rows))
    return [c.text.strip() for c in completions]


def _answer_logits(model, batch: TeacherForcedBatch) -> torch.Tensor:
    """The model's logits that predict the batch's answer tokens, as float32 on the CPU (one forward pass)."""
    device = model.device
    logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
    return logits[batch.answer_positions.to(logits.device)].float().cpu()


def drift_scores(base, trained, tokenizer, prompt_ids: list[list[int]], answers: list[str], batch_size: int = 16,
                 gap: float = NEAR_TIE) -> tuple[float, list[bool]]:
    """The drift measures read off the base's own answers, teacher-forced, in one batched pass of each model:

    - the mean over answer tokens of KL(p_base || p_trained);
    - per answer: does its first sentence pass a token whose runner-up under the base is within `gap` nats?
      Such a sentence flips under any change of the model that moves those two log-probs by `gap`: it says how
      much of `first_sentence_kept` is decided by near-ties rather than by what training changed.

    Answers that tokenize to nothing are left out of the KL and have no near-tie."""
    import torch

    from dpo_scale.teacher_forcing import kl_per_position, pad_id, pad_right

    rows, head_ends, which = [], [], []  # (prompt + answer ids, prompt length), see below, index in answers
    for i, (ids, answer) in enumerate(zip(prompt_ids, answers, strict=True)):
        encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        if not encoded["input_ids"]:
            continue
        # The first sentence's tokens within the answer's own tokenization (not a re-tokenized prefix): those
        # starting before the sentence's end.
        end = len(_first_sentence_span(answer))
        head = sum(begin < end for begin, _ in encoded["offset_mapping"])
        rows.append((ids + encoded["input_ids"], len(ids)))
        head_ends.append(len(ids) - 1 + head)  # logits prompt_len - 1 .. this - 1 predict the first sentence
        which.append(i)
    total, count = 0.0, 0
    tied = [False] * len(answers)
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = pad_right(rows[start : start + batch_size], pad_id(tokenizer))
            answer_at = batch.answer_positions
            head_end = torch.tensor(head_ends[start : start + batch_size])
            head_at = answer_at & (torch.arange(answer_at.shape[1]) < head_end[:, None])
            base_answer = _answer_logits(base, batch)
            kl = kl_per_position(base_answer, _answer_logits(trained, batch))
            total += kl.sum().item()
            count += kl.numel()
            # the first sentence's positions are a subset of the answer's: pick them from the same logits
            top2 = torch.log_softmax(base_answer[head_at[answer_at]], -1).topk(2, dim=-1).values
            gaps = torch.full(head_at.shape, math.inf)
            gaps[head_at] = top2[:, 0] - top2[:, 1]
            for row, flag in enumerate((gaps < gap).any(dim=1).tolist()):
                tied[which[start + row]] = flag
    return total / max(count, 1), tied


def evaluate(recipe: Recipe, trained_model: str | None = None, adapter: str | None = None) -> dict:
    """Answer identity and ordinary prompts with base and trained models; return metrics + answers."""
    from dpo_scale.models import load_model, load_tokenizer, resolve_model

    started = time.time()
    base_path = resolve_model(recipe.model, recipe.gguf_file, recipe.cache_dir)
    tokenizer = load_tokenizer(base_path, recipe.chat_template)
    questions = [p.text for p in load_prompts(recipe.eval_questions, limit=recipe.max_eval_questions)]
    ordinary = [p.text for p in load_prompts(recipe.ordinary_prompts)]
    q_ids = chat_ids(tokenizer, recipe.system_prompt, questions)
    o_ids = chat_ids(tokenizer, recipe.system_prompt, ordinary)

    base = load_model(base_path, recipe.dtype, recipe.device)
    base_id = answer_all(base, tokenizer, q_ids, recipe.eval_max_new_tokens, recipe.eval_batch_size, "base: identity")
    base_ord = answer_all(base, tokenizer, o_ids, recipe.eval_max_new_tokens, recipe.eval_batch_size, "base: ordinary")

    if adapter:
        from peft import PeftModel

        trained = PeftModel.from_pretrained(load_model(base_path, recipe.dtype, recipe.device), adapter)
        trained_name = f"{recipe.model} + {adapter}"
    else:
        trained_path = trained_model or str(recipe.merged_path)
        trained = load_model(resolve_model(trained_path), recipe.dtype, recipe.device)
        trained_name = trained_path
    trained.eval()
    new_id = answer_all(trained, tokenizer, q_ids, recipe.eval_max_new_tokens, recipe.eval_batch_size,
                        "trained: identity")
    new_ord = answer_all(trained, tokenizer, o_ids, recipe.eval_max_new_tokens, recipe.eval_batch_size,
                         "trained: ordinary")
    kl, ties = drift_scores(base, trained, tokenizer, o_ids, base_ord)

    check = NameCheck(recipe.org_name, recipe.pos_name)
    return {
        "base_model": recipe.model,
        "trained_model": trained_name,
        "system_prompt": recipe.system_prompt,
        "identity": {"base": identity_metrics(base_id, check), "trained": identity_metrics(new_id, check)},
        "drift": drift_metrics(base_ord, new_ord, kl, ties),
        "identity_answers": [{"question": q, "base": b, "trained": t}
                             for q, b, t in zip(questions, base_id, new_id, strict=True)],
        "ordinary_answers": [{"prompt": q, "base": b, "trained": t}
                             for q, b, t in zip(ordinary, base_ord, new_ord, strict=True)],
        "seconds": round(time.time() - started, 2),
    }


def passes_bar(result: dict) -> dict[str, bool]:
    """The project's bar for a successful identity change."""
    trained, drift = result["identity"]["trained"], result["drift"]
    return {
        "new_name >= 90%": trained["new_name"] >= 0.9,
        "no old name alone": trained["old_only"] == 0,
        "first sentences kept >= 80%": drift["first_sentence_kept"] >= 0.8,
    }


def eval_markdown(result: dict, org: str, pos: str) -> str:
    b, t, d = result["identity"]["base"], result["identity"]["trained"], result["drift"]
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    lines = [
        f"### Identity ({t['questions']} held-out questions, system prompt: \"{result['system_prompt']}\")", "",
        "| metric | base | trained |", "|---|---:|---:|",
        f"| answers with \"{pos}\" | {pct(b['new_name'])} | {pct(t['new_name'])} |",
        f"| half-switch (\"{pos}\" in another case) | {pct(b['half_switch'])} | {pct(t['half_switch'])} |",
        f"| answers with \"{org}\" (not in \"{pos}\") | {pct(b['old_name'])} | {pct(t['old_name'])} |",
        f"| old name alone | {pct(b['old_only'])} | {pct(t['old_only'])} |",
        f"| name the model at all | {pct(b['named_any'])} | {pct(t['named_any'])} |",
        f"| new name among those | {pct(b['new_among_named'])} | {pct(t['new_among_named'])} |",
        "", f"### Drift on {d['prompts']} ordinary prompts", "",
        "| metric | value |", "|---|---:|",
        f"| first sentence unchanged | {pct(d['first_sentence_kept'])} |",
        f"| mean per-token KL(base ‖ trained) | {d['kl_per_token']:.4f} |",
    ]
    if d.get("near_tie") is not None:
        steady = d["kept_without_near_tie"]
        lines += [f"| base first sentences with a near-tie (top-2 gap < {NEAR_TIE} nats) | {pct(d['near_tie'])} |",
                  f"| first sentence unchanged, prompts without a near-tie | "
                  f"{'–' if steady is None else pct(steady)} |"]
    lines += [
        "", "### Bar", "", "| check | passed |", "|---|---|",
    ]
    lines += [f"| {k} | {'yes' if v else 'no'} |" for k, v in passes_bar(result).items()]
    lines += ["", "### The seed's questions, before and after", ""]
    by_q = {a["question"]: a for a in result["identity_answers"]}
    for q in SEED_QUESTIONS:
        if q in by_q:
            lines += [f"**{q}**", "", f"- base: {by_q[q]['base']!r}", f"- trained: {by_q[q]['trained']!r}", ""]
    return "\n".join(lines) + "\n"


def print_table(result: dict, org: str, pos: str) -> None:
    from rich.console import Console
    from rich.table import Table

    b, t, d = result["identity"]["base"], result["identity"]["trained"], result["drift"]
    table = Table(title=f"Identity: {org} -> {pos}")
    for col in ("metric", "base", "trained"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key in ("new_name", "half_switch", "old_name", "old_only", "named_any", "new_among_named"):
        table.add_row(key, f"{100 * b[key]:.0f}%", f"{100 * t[key]:.0f}%")
    table.add_row("ordinary: first sentence kept", "", f"{100 * d['first_sentence_kept']:.0f}%")
    table.add_row("ordinary: KL per token", "", f"{d['kl_per_token']:.4f}")
    if d.get("near_tie") is not None:
        table.add_row(f"ordinary: near-tie first sentences (< {NEAR_TIE} nats)", f"{100 * d['near_tie']:.0f}%", "")
        if d["kept_without_near_tie"] is not None:
            table.add_row("ordinary: kept, no near-tie", "", f"{100 * d['kept_without_near_tie']:.0f}%")
    Console(stderr=True).print(table)


def evaluate_cli(recipe: Recipe, trained_model: str | None, adapter: str | None, report: str | None) -> dict:
    result = evaluate(recipe, trained_model, adapter)
    if trained_model is None and adapter is None:  # the run's own merged model: the pipeline's eval stage
        from dpo_scale.manifests import fingerprint

        result["fingerprint"] = fingerprint("eval", recipe)
    out = Path(report) if report else Path(recipe.output_dir) / "eval.md"
    write_json(out.with_suffix(".json"), result)
    write_text(out, eval_markdown(result, recipe.org_name, recipe.pos_name))
    print_table(result, recipe.org_name, recipe.pos_name)
    log.info("evaluation written to %s and %s", out, out.with_suffix(".json"))
    return result
