"""vLLM on CPU in one child process of ours, engine and model runner in it, returning token ids.

vLLM's offline `LLM` on CPU starts two processes of its own (the engine core, then a worker), each importing torch
and vLLM, and detokenizes every step in the caller while the worker computes. On a 2-core host that costs about
30 s of start (benchmarks/RESULTS.md, "The vLLM engine in one child process"). Here the child runs vLLM's engine
in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the `uni` executor), generates token ids only (`detokenize=False`)
and turns them into text once per chunk, the way vLLM's own detokenizer does (`detokenize`). The caller's process
is left as it was: vLLM's CPU worker pins its OpenMP threads to cores and sets environment variables, which must not
reach training in the same process (`dpo-scale run`)."""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from dataclasses import dataclass, field

from dpo_scale.errors import DpoScaleError
from dpo_scale.generation.base import detokenize

READY_TIMEOUT_S = 900  # importing vLLM and building the engine: 5-30 s on 2 cores, more on a busy host


@dataclass
class EngineRequest:
    prompt_ids: list[list[int]]
    params: list[dict]  # SamplingParams keyword arguments, one per prompt


@dataclass
class EngineReply:
    texts: list[str] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    error: str | None = None  # the exception's last line; its traceback is on the child's stderr


def _failed() -> EngineReply:
    traceback.print_exc(file=sys.stderr)
    return EngineReply(error=traceback.format_exc().strip().splitlines()[-1])


def _next(conn) -> EngineRequest | None:
    """The next request; None when the caller asks to stop or has gone without asking (its end of the pipe closed)."""
    try:
        return conn.recv()
    except EOFError:
        return None


def _serve(conn) -> None:
    """The child: import vLLM at once, build the engine from the first message, then answer EngineRequests until it
    receives None."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core in this process, not a third one
    try:
        from vllm import LLM, SamplingParams
    except Exception:  # noqa: BLE001 - the parent raises it with the child's traceback
        conn.send(_failed())
        return
    build = _next(conn)  # (LLM keyword arguments, environment for the engine), or None: not needed after all
    if build is None:
        return
    llm_kwargs, engine_env = build
    os.environ.update(engine_env)  # read by vLLM when the engine is built (VLLM_CPU_NUM_OF_RESERVED_CPU)
    try:
        llm = LLM(**llm_kwargs, distributed_executor_backend="uni")
        tokenizer = llm.get_tokenizer()
    except Exception:  # noqa: BLE001
        conn.send(_failed())
        return
    conn.send(EngineReply())
    while (request := _next(conn)) is not None:
        try:
            params = [SamplingParams(**p, detokenize=False) for p in request.params]
            outputs = llm.generate([{"prompt_token_ids": ids} for ids in request.prompt_ids], params, use_tqdm=False)
            ids = [list(o.outputs[0].token_ids) for o in outputs]
            texts = [detokenize(tokenizer, prompt, row) for prompt, row in zip(request.prompt_ids, ids, strict=True)]
            conn.send(EngineReply(texts, [len(i) for i in ids], [str(o.outputs[0].finish_reason) for o in outputs]))
        except Exception:  # noqa: BLE001
            conn.send(_failed())


class EngineProcess:
    """A vLLM engine in a spawned child (vLLM needs spawn, as its own processes do). The child starts importing
    vLLM as soon as this is made, so that the caller can prepare the model meanwhile (the data stage converts the
    GGUF file: two single-threaded jobs on two cores); `start` builds the engine, `generate` blocks."""

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child_conn,), name="dpo_scale-vllm", daemon=True)
        self._proc.start()
        child_conn.close()

    def start(self, llm_kwargs: dict, env: dict[str, str]) -> None:
        try:
            self._conn.send((llm_kwargs, env))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the child is gone: it sent why (say, `import vllm` failed) before exiting, and _reply reads it
        self._reply(READY_TIMEOUT_S, "starting")

    def generate(self, prompt_ids: list[list[int]], params: list[dict]) -> EngineReply:
        self._conn.send(EngineRequest(prompt_ids, params))
        return self._reply(None, "generating")

    def _reply(self, timeout: float | None, doing: str) -> EngineReply:
        waited = 0.0
        while not self._conn.poll(5.0):
            waited += 5.0
            if not self._proc.is_alive():
                raise DpoScaleError(f"the vLLM engine process died while {doing} (exit code {self._proc.exitcode});"
                                    " its log is above")
            if timeout is not None and waited >= timeout:
                self.close()
                raise DpoScaleError(f"the vLLM engine process did not finish {doing} in {timeout} s")
        try:
            reply = self._conn.recv()
        except EOFError:  # the child exited without a word (killed)
            self._proc.join(5)
            self.close()
            raise DpoScaleError(f"the vLLM engine process died while {doing} (exit code {self._proc.exitcode});"
                                " its log is above") from None
        if reply.error:
            self.close()
            raise DpoScaleError(f"vLLM failed while {doing}: {reply.error} (traceback above)")
        return reply

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(60)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
