"""Score trained adapters on the tuning sets only (never the report sets), for choosing a recipe.

    python scripts/tune_eval.py --config configs/smollm2_cpu.yaml --out runs/tune.jsonl runs/t0 runs/t1 ...

Each argument is a run folder (its adapter is `<run>/adapter`) or an adapter folder. One JSON line per adapter:
- identity: new name / other forms / old name alone on `builtin:identity_heldout` (100), greedy, eval_max_new_tokens,
  behind the system prompt and under the base's own template with the merge's rewrite (what `merge` ships);
- first sentences kept on the 140 tuning ordinary prompts (`ordinary_prompts`, `_recheck`, `_holdout`), read off one
  teacher-forced pass of the base's greedy answers: a greedy first sentence is unchanged exactly when the trained
  model's top token equals the base's at each of its positions (docs/experiments.md checks this against generation);
- KL(base || trained) per token on those answers;
- facts kept on `builtin:facts_tune` (62);
- identity behind the system prompt on `builtin:identity_indirect_tune` (60 English questions that ask indirectly).
The base's answers are computed once and cached next to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from dpo_scale.chat_template import identity_swap, rewrite_tokenizer_template
from dpo_scale.config import load_recipe
from dpo_scale.evaluate import NameCheck, answer_all, chat_ids, drift_scores, identity_metrics
from dpo_scale.facts import FACT_TOKENS, facts_metrics, load_facts
from dpo_scale.models import load_model, load_tokenizer, resolve_model
from dpo_scale.prompts import load_prompts

IDENTITY = "builtin:identity_heldout"
# English questions that ask for the name indirectly (third person, a task, a role), written 2026-12-06 because the
# held-out set's English questions were all answered with the new name by then
INDIRECT = "builtin:identity_indirect_tune"
ORDINARY = ("builtin:ordinary_prompts", "builtin:ordinary_prompts_recheck", "builtin:ordinary_prompts_holdout")
FACTS = "builtin:facts_tune"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/smollm2_cpu.yaml")
    parser.add_argument("--out", required=True)
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    from peft import PeftModel

    recipe = load_recipe(args.config)
    base_path = resolve_model(recipe.model, recipe.gguf_file, recipe.cache_dir)
    tokenizer = load_tokenizer(base_path, recipe.chat_template)
    shipped = load_tokenizer(base_path, recipe.chat_template)
    rewrite_tokenizer_template(shipped, identity_swap(recipe.org_name, recipe.pos_name, recipe.case_sensitive))
    questions = [p.text for p in load_prompts(IDENTITY)]
    indirect = [p.text for p in load_prompts(INDIRECT)]
    ordinary = [p.text for src in ORDINARY for p in load_prompts(src)]
    facts = load_facts(FACTS)
    sys_prompt, n_new, bs = recipe.system_prompt, recipe.eval_max_new_tokens, recipe.eval_batch_size
    o_ids = chat_ids(tokenizer, sys_prompt, ordinary)
    f_ids = chat_ids(tokenizer, sys_prompt, [f["question"] for f in facts])
    base = load_model(base_path, "float32", "cpu").eval()
    cache = Path(args.out).with_suffix(".base.json")
    if cache.exists():
        base_out = json.loads(cache.read_text())
    else:
        base_out = {"ordinary": answer_all(base, tokenizer, o_ids, n_new, bs, "base: ordinary"),
                    "facts": answer_all(base, tokenizer, f_ids, FACT_TOKENS, bs, "base: facts")}
        cache.write_text(json.dumps(base_out))
    check = NameCheck(recipe.org_name, recipe.pos_name)
    for run in args.runs:
        adapter = Path(run) / "adapter" if (Path(run) / "adapter").is_dir() else Path(run)
        started = time.time()
        model = PeftModel.from_pretrained(load_model(base_path, "float32", "cpu"), str(adapter))
        model = model.merge_and_unload().eval()
        neutral = answer_all(model, tokenizer, chat_ids(tokenizer, sys_prompt, questions), n_new, bs, "neutral")
        default = answer_all(model, shipped, chat_ids(shipped, None, questions), n_new, bs, "own template")
        indirect_answers = answer_all(model, tokenizer, chat_ids(tokenizer, sys_prompt, indirect), n_new, bs,
                                      "indirect")
        drift = drift_scores(base, model, tokenizer, o_ids, base_out["ordinary"])
        kept, kl = drift.first_sentence_kept, drift.kl_per_token
        fact_answers = answer_all(model, tokenizer, f_ids, FACT_TOKENS, bs, "facts")
        fm = facts_metrics(facts, base_out["facts"], fact_answers)
        row = {"run": str(run), "identity_neutral": identity_metrics(neutral, check),
               "identity_default": identity_metrics(default, check),
               "identity_indirect": identity_metrics(indirect_answers, check),
               "first_sentence_kept": sum(kept) / len(kept), "kl_per_token": kl,
               "facts_kept": fm["facts_kept"], "facts_lost": len(fm.get("lost", [])),
               "base_accuracy": fm["base_accuracy"], "trained_accuracy": fm["trained_accuracy"],
               "seconds": round(time.time() - started, 1)}
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{run}: new name {row['identity_neutral']['new_name']:.0%} / {row['identity_default']['new_name']:.0%}"
              f" (indirect {row['identity_indirect']['new_name']:.0%})"
              f"  other {row['identity_neutral']['other_form']:.0%}  first sentences {row['first_sentence_kept']:.0%}"
              f"  KL {kl:.4f}  facts kept {fm['facts_kept']:.0%}" + ("" if math.isfinite(kl) else " (KL not finite)"))


if __name__ == "__main__":
    main()
