"""Evaluate base vs trained: did the name change, and did nothing else?

Identity questions, greedy, in two modes: `neutral` behind the recipe's system prompt, and `default` with no
system message, each model's own chat template (what a chat UI or a bare server request gets):
  new_name      share of answers containing POS_NAME exactly
  other_form    share containing another case or spacing of POS_NAME ("deep SmolLM", "DeepSmolLM")
  old_name      share containing ORG_NAME not as part of POS_NAME (case-insensitive)
  old_only      share naming the old name and no form of the new one
  new_among_named  among answers that name the model at all, the share using POS_NAME
  author        the same for org_author -> pos_author, when the recipe sets both
Ordinary prompts (behind the system prompt):
  first_sentence_kept  share whose first sentence is unchanged
  kl_per_token         mean per-token KL(base || trained) on the base model's own answers (teacher-forced)
  near_tie             share of base first sentences with a near-tie: a token whose top-2 log-probs under the
                       base differ by < NEAR_TIE nats (any change that size flips the greedy sentence)
  kept_without_near_tie  first_sentence_kept among the prompts without one
Facts (`facts_questions`, behind the system prompt; dpo_scale/facts.py):
  base_accuracy, trained_accuracy, facts_kept (of the questions the base gets right, the share still right)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dpo_scale.config import Recipe
from dpo_scale.intervals import wilson
from dpo_scale.io import write_json, write_text
from dpo_scale.prompts import load_prompts
from dpo_scale.text import first_sentence, first_sentence_settled, first_sentence_span, name_pattern

if TYPE_CHECKING:
    import torch

    from dpo_scale.teacher_forcing import TeacherForcedBatch

log = logging.getLogger(__name__)

NEAR_TIE = 0.1  # nats between the base's top-2 next tokens
SEED_QUESTIONS = ("What is your name?", "Are you ChatGPT?", "Tell me about your name and organization.")
MODES = ("neutral", "default")  # behind the recipe's system prompt; no system message, the model's own template
MODE_TITLES = {"neutral": "system prompt", "default": "own template, no system message"}
LOST_SHOWN = 5  # lost facts shown in eval.md
# The bar (issue 15): new name in both modes, no old name alone, few other forms, facts and first sentences kept.
BAR_NEW_NAME, BAR_OTHER_FORM, BAR_FACTS_KEPT, BAR_FIRST_SENTENCE = 0.95, 0.02, 0.97, 0.80


@dataclass(frozen=True)
class NameCheck:
    org_name: str
    pos_name: str

    def classify(self, text: str) -> dict[str, bool]:
        """Which forms of the names `text` holds, each as a word of its own (dpo_scale/text.py). Any case and any
        spacing of the new name's words count as its forms; only the exact new name counts as `new`."""
        new = other = old = False
        for m in name_pattern(self.org_name, self.pos_name, loose=True).finditer(text):
            if m.group("new") is None:
                old = True
            elif m.group(0) == self.pos_name:
                new = True
            else:
                other = True
        return {"new": new, "other_form": other, "old": old, "old_only": old and not new and not other}


def identity_metrics(answers: list[str], check: NameCheck) -> dict[str, float]:
    flags = [check.classify(a) for a in answers]
    n = max(len(flags), 1)
    named = [f for f in flags if f["new"] or f["other_form"] or f["old"]]
    return {
        "questions": len(flags),
        "new_name": sum(f["new"] for f in flags) / n,
        "other_form": sum(f["other_form"] for f in flags) / n,
        "old_name": sum(f["old"] for f in flags) / n,
        "old_only": sum(f["old_only"] for f in flags) / n,
        "named_any": len(named) / n,
        "new_among_named": (sum(f["new"] for f in named) / len(named)) if named else 0.0,
    }


def mode_metrics(answers: list[str], check: NameCheck, author: NameCheck | None) -> dict:
    """The identity metrics of one model in one mode, with the author's under `author` when it is checked."""
    out: dict = identity_metrics(answers, check)
    if author is not None:
        out["author"] = identity_metrics(answers, author)
    return out


def drift_metrics(base_answers: list[str], trained_answers: list[str], kl: float,
                  near_tie: list[bool] | None = None) -> dict[str, float]:
    kept = [first_sentence(a) == first_sentence(b) for a, b in zip(base_answers, trained_answers, strict=True)]
    out = {"prompts": len(kept), "first_sentence_kept": sum(kept) / max(len(kept), 1), "kl_per_token": kl}
    if near_tie is not None:
        steady = [k for k, tie in zip(kept, near_tie, strict=True) if not tie]
        out["near_tie"] = sum(near_tie) / max(len(near_tie), 1)
        out["kept_without_near_tie"] = sum(steady) / len(steady) if steady else None
    return out


def chat_ids(tokenizer, system_prompt: str | None, texts: list[str]) -> list[list[int]]:
    from dpo_scale.generation.runner import render_prompts

    return render_prompts(tokenizer, texts, system_prompt)


def answer_all(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int,
               desc: str = "answer", stop: list | None = None) -> list[str]:
    """Greedy answers; `stop`: per prompt, a rule that ends its answer early (HFGenerator.generate)."""
    from tqdm.auto import tqdm

    from dpo_scale.generation.base import Sampling
    from dpo_scale.generation.hf import HFGenerator

    gen = HFGenerator(model, tokenizer, batch_size)
    with tqdm(total=len(prompt_ids), desc=desc, unit="prompt", dynamic_ncols=True) as bar:
        completions = gen.generate(prompt_ids, Sampling(max_new_tokens, 0.0), seed=0,
                                   progress=lambda rows, _tokens: bar.update(rows), stop=stop)
    return [c.text.strip() for c in completions]


def _answer_logits(model, batch: TeacherForcedBatch) -> torch.Tensor:
    """The model's logits that predict the batch's answer tokens, as float32 on the CPU (one forward pass)."""
    from dpo_scale.teacher_forcing import answer_logits

    return answer_logits(model, batch, model.device).float().cpu()


def _both_answer_logits(base, trained, batch: TeacherForcedBatch, shared: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_answer_logits` of both models; the trained model's pass starts at layer `shared` from the base's hidden
    states there, when the layers below hold the same weights in both (`same_lower_layers`)."""
    if not shared:
        return _answer_logits(base, batch), _answer_logits(trained, batch)
    from dpo_scale.shared_trunk import keeping_input_of, starting_at

    with keeping_input_of(base.get_decoder().layers[shared]) as kept:
        base_logits = _answer_logits(base, batch)
    with starting_at(trained.get_decoder(), shared, kept[0].to(trained.device)):
        return base_logits, _answer_logits(trained, batch)


def _lower_layers_to_share(base, trained, batch: TeacherForcedBatch) -> int:
    """The layers the trained model's drift passes can take from the base's (`same_lower_layers`), 0 unless its pass
    started from there gives what its full pass gives on `batch` (a decoder that transforms its embeddings before the
    first layer would not)."""
    import torch

    from dpo_scale.shared_trunk import same_lower_layers

    shared = same_lower_layers(base, trained)
    if not shared:
        return 0
    full = _answer_logits(trained, batch)
    started = _both_answer_logits(base, trained, batch, shared)[1]
    tolerance = 1e-4 if next(trained.parameters()).dtype == torch.float32 else 1e-2
    if torch.allclose(started, full, atol=tolerance, rtol=tolerance):
        log.info("drift: layers 0-%d run once for both models (the same weights in both)", shared - 1)
        return shared
    log.warning("drift: the trained model's pass from layer %d differs from its full pass; each model runs all its "
                "layers", shared)
    return 0


@dataclass(frozen=True)
class TeacherForcedDrift:
    """The drift measures of `drift_scores`, per answer where they are lists."""

    kl_per_token: float  # mean over answer tokens of KL(p_base || p_trained)
    near_tie: list[bool]  # the base's first sentence passes a token whose runner-up is within `gap` nats
    first_sentence_kept: list[bool]  # the trained model's top token is the base's at every first-sentence position


def drift_scores(base, trained, tokenizer, prompt_ids: list[list[int]], answers: list[str], batch_size: int = 16,
                 gap: float = NEAR_TIE) -> TeacherForcedDrift:
    """The drift measures read off the base's own answers, teacher-forced, in one batched pass of each model:

    - the mean over answer tokens of KL(p_base || p_trained);
    - per answer: does its first sentence pass a token whose runner-up under the base is within `gap` nats?
      Such a sentence flips under any change of the model that moves those two log-probs by `gap`: it says how
      much of `first_sentence_kept` is decided by near-ties rather than by what training changed;
    - per answer: would the trained model's greedy first sentence be the base's? Exactly when its top token is the
      base's at each of the sentence's positions (what tuning reads instead of generating).

    Answers that tokenize to nothing are left out of the KL, have no near-tie and keep their (empty) sentence."""
    import torch

    from dpo_scale.teacher_forcing import kl_per_position, pad_id, pad_right, top_two

    rows, head_ends, which = [], [], []  # (prompt + answer ids, prompt length), see below, index in answers
    for i, (ids, answer) in enumerate(zip(prompt_ids, answers, strict=True)):
        encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        if not encoded["input_ids"]:
            continue
        # The first sentence's tokens within the answer's own tokenization (not a re-tokenized prefix): those
        # starting before the sentence's end.
        end = len(first_sentence_span(answer))
        head = sum(begin < end for begin, _ in encoded["offset_mapping"])
        rows.append((ids + encoded["input_ids"], len(ids)))
        head_ends.append(len(ids) - 1 + head)  # logits prompt_len - 1 .. this - 1 predict the first sentence
        which.append(i)
    total, count = 0.0, 0
    tied, kept = [False] * len(answers), [True] * len(answers)
    with torch.inference_mode():
        # checked on the first two rows alone: a small batch, the same shapes in both passes
        shared = _lower_layers_to_share(base, trained, pad_right(rows[:2], pad_id(tokenizer))) if rows else 0
        for start in range(0, len(rows), batch_size):
            batch = pad_right(rows[start : start + batch_size], pad_id(tokenizer))
            answer_at = batch.answer_positions
            head_end = torch.tensor(head_ends[start : start + batch_size])
            head_at = answer_at & (torch.arange(answer_at.shape[1]) < head_end[:, None])
            base_answer, trained_answer = _both_answer_logits(base, trained, batch, shared)
            kl = kl_per_position(base_answer, trained_answer)
            total += kl.sum().item()
            count += kl.numel()
            # the first sentence's positions are a subset of the answer's: pick them from the same logits
            in_head = head_at[answer_at]
            base_top, base_lead = top_two(base_answer[in_head])
            gaps = torch.full(head_at.shape, math.inf)
            gaps[head_at] = base_lead
            changed = torch.zeros(head_at.shape, dtype=torch.bool)
            changed[head_at] = base_top != trained_answer[in_head].argmax(-1)
            for row, (flag, moved) in enumerate(zip((gaps < gap).any(dim=1).tolist(), changed.any(dim=1).tolist(),
                                                    strict=True)):
                tied[which[start + row]], kept[which[start + row]] = flag, not moved
    return TeacherForcedDrift(total / max(count, 1), tied, kept)


def own_tokenizer(path: str, fallback):
    """The tokenizer saved with a model folder when it has a chat template of its own (a merged model's template may
    differ from the base's), else `fallback`."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):  # no tokenizer files in the folder
        return fallback
    if not tokenizer.chat_template:
        return fallback
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def answer_sets(model, tokenizer, system_prompt: str, questions: list[str], ordinary: list[str], facts: list[dict],
                max_new_tokens: int, batch_size: int, who: str, whole_ordinary: bool = True) -> dict[str, list[str]]:
    """One model's greedy answers: identity questions in both modes and ordinary prompts in one batched pass of
    `max_new_tokens`, fact questions (behind the system prompt) in a second of FACT_TOKENS.

    What the metrics cannot use is not generated: a fact answer ends once it holds an accepted answer that no later
    text can undo (`right_answer_settled`), and with `whole_ordinary=False` an ordinary answer ends once its first
    sentence is settled (the trained model's: drift compares first sentences and reads the KL off the base's whole
    answers). The metrics are those of the whole answers."""
    from dpo_scale.facts import FACT_TOKENS, right_answer_settled

    parts = {"neutral": chat_ids(tokenizer, system_prompt, questions),
             "default": chat_ids(tokenizer, None, questions),
             "ordinary": chat_ids(tokenizer, system_prompt, ordinary)}
    ordinary_rule = None if whole_ordinary else first_sentence_settled
    stop = [None] * (len(questions) * 2) + [ordinary_rule] * len(ordinary)
    flat = answer_all(model, tokenizer, [ids for rows in parts.values() for ids in rows], max_new_tokens, batch_size,
                      f"{who}: identity + ordinary", stop=stop)
    out, at = {}, 0
    for key, rows in parts.items():
        out[key], at = flat[at : at + len(rows)], at + len(rows)
    out["facts"] = answer_all(model, tokenizer, chat_ids(tokenizer, system_prompt, [f["question"] for f in facts]),
                              FACT_TOKENS, batch_size, f"{who}: facts",
                              stop=[right_answer_settled(f["answers"]) for f in facts]) if facts else []
    return out


def evaluate(recipe: Recipe, trained_model: str | None = None, adapter: str | None = None) -> dict:
    """Answer identity questions (both modes), ordinary prompts and fact questions with base and trained models;
    return metrics + answers."""
    from dpo_scale.facts import facts_metrics, load_facts
    from dpo_scale.models import load_model, load_tokenizer, resolve_model

    started = time.time()
    base_path = resolve_model(recipe.model, recipe.gguf_file, recipe.cache_dir)
    tokenizer = load_tokenizer(base_path, recipe.chat_template)
    questions = [p.text for p in load_prompts(recipe.eval_questions, limit=recipe.max_eval_questions)]
    ordinary = [p.text for p in load_prompts(recipe.ordinary_prompts, limit=recipe.max_ordinary_prompts)]
    facts = load_facts(recipe.facts_questions) if recipe.facts_questions else []
    fact_questions = [f["question"] for f in facts]

    def answers(model, tok, who: str) -> dict[str, list[str]]:
        return answer_sets(model, tok, recipe.system_prompt, questions, ordinary, facts, recipe.eval_max_new_tokens,
                           recipe.eval_batch_size, who, whole_ordinary=who == "base")

    base = load_model(base_path, recipe.dtype, recipe.device)
    base_out = answers(base, tokenizer, "base")

    if adapter:
        from peft import PeftModel

        trained = PeftModel.from_pretrained(load_model(base_path, recipe.dtype, recipe.device), adapter)
        trained_name, trained_tokenizer = f"{recipe.model} + {adapter}", tokenizer
    else:
        trained_path = trained_model or str(recipe.merged_path)
        trained_folder = resolve_model(trained_path)
        trained = load_model(trained_folder, recipe.dtype, recipe.device)
        trained_name, trained_tokenizer = trained_path, own_tokenizer(trained_folder, tokenizer)
    trained.eval()
    new_out = answers(trained, trained_tokenizer, "trained")
    o_ids = chat_ids(tokenizer, recipe.system_prompt, ordinary)
    drift = drift_scores(base, trained, tokenizer, o_ids, base_out["ordinary"])

    check = NameCheck(recipe.org_name, recipe.pos_name)
    author = NameCheck(recipe.org_author, recipe.pos_author) if recipe.org_author and recipe.pos_author else None
    result = {
        "base_model": recipe.model,
        "trained_model": trained_name,
        "system_prompt": recipe.system_prompt,
        "own_template": trained_tokenizer is not tokenizer,  # default mode read the trained model's own template
        "drift": drift_metrics(base_out["ordinary"], new_out["ordinary"], drift.kl_per_token, drift.near_tie),
        "ordinary_answers": [{"prompt": q, "base": b, "trained": t}
                             for q, b, t in zip(ordinary, base_out["ordinary"], new_out["ordinary"], strict=True)],
        "seconds": round(time.time() - started, 2),
    }
    for mode in MODES:
        suffix = "" if mode == "neutral" else f"_{mode}"  # "identity" stays the neutral mode's key
        result[f"identity{suffix}"] = {
            "system_prompt": recipe.system_prompt if mode == "neutral" else None,
            "base": mode_metrics(base_out[mode], check, author),
            "trained": mode_metrics(new_out[mode], check, author)}
        pairs = zip(questions, base_out[mode], new_out[mode], strict=True)
        result[f"identity_answers{suffix}"] = [{"question": q, "base": b, "trained": t} for q, b, t in pairs]
    if facts:
        result["facts"] = facts_metrics(facts, base_out["facts"], new_out["facts"])
        result["fact_answers"] = [{"question": q, "base": b, "trained": t}
                                  for q, b, t in zip(fact_questions, base_out["facts"], new_out["facts"], strict=True)]
    return result


def _modes(result: dict) -> dict[str, dict]:
    """The identity results per mode present in `result` (eval.json files before the default mode have one)."""
    found = {"neutral": result["identity"]}
    if "identity_default" in result:
        found["default"] = result["identity_default"]
    return found


def passes_bar(result: dict) -> dict[str, bool]:
    """The project's bar for a successful identity change."""
    bar: dict[str, bool] = {}
    modes = _modes(result)
    for mode, ident in modes.items():
        bar[f"new name >= {BAR_NEW_NAME:.0%} ({MODE_TITLES[mode]})"] = ident["trained"]["new_name"] >= BAR_NEW_NAME
    bar["no old name alone"] = all(m["trained"]["old_only"] == 0 for m in modes.values())
    bar[f"other forms of the new name <= {BAR_OTHER_FORM:.0%}"] = all(
        m["trained"].get("other_form", 0.0) <= BAR_OTHER_FORM for m in modes.values())
    if result.get("facts", {}).get("facts_kept") is not None:
        bar[f"facts kept >= {BAR_FACTS_KEPT:.0%}"] = result["facts"]["facts_kept"] >= BAR_FACTS_KEPT
    bar[f"first sentences kept >= {BAR_FIRST_SENTENCE:.0%}"] = (
        result["drift"]["first_sentence_kept"] >= BAR_FIRST_SENTENCE)
    return bar


def sampled_shares(result: dict) -> list[tuple[str, int, int]]:
    """The bar's shares as (figure, successes, trials): how many answers each rests on."""
    rows = []
    for mode, ident in _modes(result).items():
        n = ident["trained"]["questions"]
        rows.append((f"new name ({MODE_TITLES[mode]})", round(ident["trained"]["new_name"] * n), n))
    facts = result.get("facts") or {}
    if facts.get("facts_kept") is not None:
        rows.append(("facts kept", facts["kept"], facts["base_right"]))
    d = result["drift"]
    rows.append(("first sentences kept", round(d["first_sentence_kept"] * d["prompts"]), d["prompts"]))
    return rows


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


IDENTITY_ROWS = (  # (metric, label); "{name}"/"{old}": the names checked, "{what}": whose names
    ("new_name", "answers with \"{name}\""),
    ("other_form", "other forms of \"{name}\" (case, spacing)"),
    ("old_name", "answers with \"{old}\" (not in \"{name}\")"),
    ("old_only", "old name alone"),
    ("named_any", "name {what} at all"),
    ("new_among_named", "new name among those"),
)


def _identity_table(modes: dict[str, dict], org: str, pos: str, key: str | None = None,
                    what: str = "the model") -> list[str]:
    header = "| metric | " + " | ".join(f"{MODE_TITLES[m]}: base | {MODE_TITLES[m]}: trained" for m in modes) + " |"
    lines = [header, "|---|" + "---:|" * (2 * len(modes))]
    for metric, label in IDENTITY_ROWS:
        cells = []
        for ident in modes.values():
            for side in ("base", "trained"):
                values = ident[side] if key is None else ident[side][key]
                cells.append(_pct(values.get(metric)))
        lines.append(f"| {label.format(name=pos, old=org, what=what)} | " + " | ".join(cells) + " |")
    return lines


def facts_markdown(facts: dict, shown: int = LOST_SHOWN) -> list[str]:
    lines = [f"### Facts kept ({facts['questions']} short factual questions)", "",
             "| metric | value |", "|---|---:|",
             f"| base accuracy | {_pct(facts['base_accuracy'])} |",
             f"| trained accuracy | {_pct(facts['trained_accuracy'])} |",
             f"| facts kept (of the {facts['base_right']} the base gets right) | {_pct(facts['facts_kept'])} |", ""]
    lost = facts["lost"]
    if lost:
        lines += [f"Lost facts ({len(lost)}; {min(shown, len(lost))} shown, all in eval.json):", ""]
        lines += [f"- **{f['question']}** (accepted: {', '.join(f['answers'])}) base: {f['base']!r}; "
                  f"trained: {f['trained']!r}" for f in lost[:shown]]
        lines.append("")
    return lines


def eval_markdown(result: dict, org: str, pos: str, org_author: str | None = None,
                  pos_author: str | None = None) -> str:
    modes = _modes(result)
    d = result["drift"]
    questions = result["identity"]["trained"]["questions"]
    lines = [f"### Identity ({questions} held-out questions; system prompt: \"{result['system_prompt']}\")", ""]
    lines += _identity_table(modes, org, pos)
    if "author" in result["identity"]["trained"]:
        lines += ["", f"Author ({org_author or 'old'} -> {pos_author or 'new'}):", ""]
        lines += _identity_table(modes, org_author or "old author", pos_author or "new author", key="author",
                                  what="the author")
    lines += ["", f"### Drift on {d['prompts']} ordinary prompts", "",
              "| metric | value |", "|---|---:|",
              f"| first sentence unchanged | {_pct(d['first_sentence_kept'])} |",
              f"| mean per-token KL(base ‖ trained) | {d['kl_per_token']:.4f} |"]
    if d.get("near_tie") is not None:
        lines += [f"| base first sentences with a near-tie (top-2 gap < {NEAR_TIE} nats) | {_pct(d['near_tie'])} |",
                  f"| first sentence unchanged, prompts without a near-tie | {_pct(d['kept_without_near_tie'])} |"]
    lines.append("")
    if result.get("facts"):
        lines += facts_markdown(result["facts"])
    lines += ["### Bar", "", "| check | passed |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else 'no'} |" for k, v in passes_bar(result).items()]
    lines += ["", "How sure: the answers behind each share the bar checks, and its 95% Wilson interval "
              "(dpo_scale/intervals.py).", "",
              "| figure | answers | share | 95% interval |", "|---|---:|---:|---:|"]
    for figure, k, n in sampled_shares(result):
        low, high = wilson(k, n)
        lines.append(f"| {figure} | {k} of {n} | {_pct(k / n if n else None)} | {_pct(low)}–{_pct(high)} |")
    lines += ["", "### The seed's questions, before and after", ""]
    for mode, suffix in (("neutral", ""), ("default", "_default")):
        by_q = {a["question"]: a for a in result.get(f"identity_answers{suffix}", [])}
        for q in SEED_QUESTIONS:
            if q in by_q:
                lines += [f"**{q}** ({MODE_TITLES[mode]})", "", f"- base: {by_q[q]['base']!r}",
                          f"- trained: {by_q[q]['trained']!r}", ""]
    return "\n".join(lines) + "\n"


def print_table(result: dict, org: str, pos: str) -> None:
    from rich.console import Console
    from rich.table import Table

    d = result["drift"]
    table = Table(title=f"Identity: {org} -> {pos}")
    modes = _modes(result)
    table.add_column("metric", justify="left")
    for mode in modes:
        for side in ("base", "trained"):
            table.add_column(f"{mode}: {side}", justify="right")
    for key in ("new_name", "other_form", "old_name", "old_only", "named_any", "new_among_named"):
        table.add_row(key, *(_pct(m[side].get(key)) for m in modes.values() for side in ("base", "trained")))
    blank = [""] * (2 * len(modes) - 1)
    table.add_row("ordinary: first sentence kept", *blank, _pct(d["first_sentence_kept"]))
    table.add_row("ordinary: KL per token", *blank, f"{d['kl_per_token']:.4f}")
    if d.get("near_tie") is not None:
        table.add_row(f"ordinary: near-tie first sentences (< {NEAR_TIE} nats)", _pct(d["near_tie"]), *blank)
    if result.get("facts"):
        f = result["facts"]
        table.add_row("facts: accuracy (base, trained)", _pct(f["base_accuracy"]), *blank[1:],
                      _pct(f["trained_accuracy"]))
        table.add_row("facts kept", *blank, _pct(f["facts_kept"]))
    Console(stderr=True).print(table)


def evaluate_cli(recipe: Recipe, trained_model: str | None, adapter: str | None, report: str | None) -> dict:
    result = evaluate(recipe, trained_model, adapter)
    if trained_model is None and adapter is None:  # the run's own merged model: the pipeline's eval stage
        from dpo_scale.manifests import fingerprint

        result["fingerprint"] = fingerprint("eval", recipe)
    out = Path(report) if report else Path(recipe.output_dir) / "eval.md"
    write_json(out.with_suffix(".json"), result)
    write_text(out, eval_markdown(result, recipe.org_name, recipe.pos_name, recipe.org_author, recipe.pos_author))
    print_table(result, recipe.org_name, recipe.pos_name)
    log.info("evaluation written to %s and %s", out, out.with_suffix(".json"))
    return result
