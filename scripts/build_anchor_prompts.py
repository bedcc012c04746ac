"""Build `dpo_scale/data/anchor_prompts.jsonl`: ordinary (non-identity) training prompts.

The data stage answers these with the base model itself under the neutral system prompt; each answer
becomes a pair whose chosen and rejected are the same text ("anchor"). The DPO term of such a pair is
exactly zero, the SFT term pulls the adapter back to what the base already says, so teaching the new
name does not rewrite ordinary answers. The prompts are disjoint from `ordinary_prompts.jsonl`, the
evaluation's drift set (the build refuses any overlap), so the drift measured stays out-of-sample.

Usage: ``python scripts/build_anchor_prompts.py [--out dpo_scale/data/anchor_prompts.jsonl]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261125
DATA = Path(__file__).resolve().parent.parent / "dpo_scale" / "data"

COUNTRIES = ["Italy", "Germany", "Canada", "Australia", "Egypt", "Kenya", "Peru", "Norway", "India",
             "Mexico", "Spain", "Greece", "Chile", "Vietnam", "Poland", "Portugal", "Ireland", "Turkey"]
FACTS = [
    "What is the chemical symbol for iron?", "How many planets are in the solar system?",
    "What gas do plants absorb from the air?", "Who painted the Mona Lisa?",
    "What is the smallest prime number?", "How many sides does a hexagon have?",
    "What is the longest river in Africa?", "What is the hardest natural substance?",
    "Which planet is known as the Red Planet?", "How many hours are in a week?",
    "What is the main ingredient of guacamole?", "Who discovered penicillin?",
    "What is the speed of light, roughly?", "How many bones does an adult human have?",
    "What organ pumps blood through the body?", "What is the largest desert in the world?",
    "Which animal is known as the king of the jungle?", "What is H2O commonly called?",
    "How many minutes are in two hours?", "Who was the first person to walk on the Moon?",
    "What currency is used in the United Kingdom?", "What is the capital city of Canada's Ontario province?",
    "What do bees make?", "How many strings does a standard guitar have?",
    "What is the freezing point of water in Celsius?", "Which continent is Egypt in?",
    "What is the main language spoken in Argentina?", "How many teeth does an adult human usually have?",
    "What is the largest mammal on Earth?", "What instrument has 88 keys?",
]
DEFINE = ["gravity", "a verb", "inflation", "an atom", "a metaphor", "erosion", "a democracy",
          "evaporation", "a prime number", "an ecosystem", "friction", "a haiku", "a volcano", "a budget"]
WORDS = ["brave", "quick", "generous", "fragile", "curious", "silent", "narrow", "bright", "humble", "vast"]
TOPICS = ["winter", "the moon", "a busy city", "a quiet forest", "coffee", "friendship", "the sea at night",
          "a mountain hike", "spring flowers", "a rainy afternoon", "an old library", "a summer storm"]
HOWTO = [
    "How do I boil an egg?", "Give me a tip for sleeping better.", "How can I save money on groceries?",
    "What is a good way to start learning to cook?", "How do I make a cup of tea?",
    "Give me one tip for writing a clear email.", "How can I remember names better?",
    "What should I pack for a day hike?", "Suggest a quick breakfast idea.",
    "How do I keep a houseplant alive?", "Give me a tip for public speaking.",
    "Suggest a fun activity for a rainy day.", "How can I stay hydrated during the day?",
    "What is a simple way to reduce stress?", "Suggest a name for a coffee shop.",
]
PHRASES = ["thank you", "good night", "where is the station", "I love books", "see you tomorrow", "hello"]
LANGUAGES = ["French", "German", "Italian", "Spanish"]


def arithmetic(rng: random.Random, n: int) -> list[str]:
    forms = ["What is {a} plus {b}?", "What is {a} minus {b}?", "What is {a} times {b}?",
             "Calculate {a} + {b}.", "What is {a} multiplied by {b}?"]
    out = []
    for i in range(n):
        a, b = rng.randint(11, 99), rng.randint(2, 40)
        out.append(forms[i % len(forms)].format(a=a, b=b))
    return out


def build(rng: random.Random) -> list[str]:
    prompts = [f"What is the capital of {c}?" for c in COUNTRIES]
    prompts += FACTS + HOWTO
    prompts += [f"Define {d} in one sentence." for d in DEFINE]
    prompts += [f"Give me a synonym for '{w}'." for w in WORDS[:5]]
    prompts += [f"What is the opposite of '{w}'?" for w in WORDS[5:]]
    prompts += [f"Write one sentence about {t}." for t in TOPICS[:6]]
    prompts += [f"Write a short poem about {t}." for t in TOPICS[6:]]
    prompts += [f"Translate '{p}' into {lang}." for p, lang in zip(PHRASES, LANGUAGES * 2, strict=False)]
    prompts += arithmetic(rng, 30)
    seen: set[str] = set()
    unique = [p for p in prompts if not (p.lower() in seen or seen.add(p.lower()))]
    rng.shuffle(unique)
    return unique


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA / "anchor_prompts.jsonl")
    args = parser.parse_args()
    held_out = {json.loads(line)["conversations"][-1]["value"].lower()
                for line in (DATA / "ordinary_prompts.jsonl").read_text().splitlines() if line.strip()}
    prompts = build(random.Random(SEED))
    overlap = [p for p in prompts if p.lower() in held_out]
    if overlap:
        raise SystemExit(f"anchor prompts overlap the evaluation's ordinary prompts: {overlap}")
    args.out.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": p}]}) + "\n"
                                for p in prompts), encoding="utf-8")
    print(f"{len(prompts)} anchor prompts -> {args.out}")


if __name__ == "__main__":
    main()
