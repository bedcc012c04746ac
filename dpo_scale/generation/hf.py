"""Batched transformers generation: left padding, length-sorted buckets, KV cache, and finished rows
dropped from the batch so that long answers do not keep short ones' slots busy. The KV cache is written in
place and prompts are prefilled in groups of similar length; on CPU grouped KV heads are not copied and the
vocabulary projection runs in slices (`fast_decode`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpo_scale.generation.base import Completion, Sampling, detokenize
from dpo_scale.generation.fast_decode import (
    chunked_lm_head,
    fill_from_end,
    gqa_attention,
    grouped_prefill,
    prefill_prefix,
)

MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth the extra forward pass
StopRule = Callable[[str], bool]  # the answer's text so far -> end the row now


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the token prefix common to every prompt, leaving each at least one token of its own."""
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for n in range(max(limit, 0)):
        if any(p[n] != first[n] for p in prompts):
            return n
    return max(limit, 0)


class HFGenerator:
    name = "hf"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 32):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        eos = model.generation_config.eos_token_id
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(self.eos_ids))

    def close(self) -> None:
        """Nothing to stop: the model is freed with the generator."""

    def generate(
        self, prompt_ids: list[list[int]], sampling: Sampling, seed: int, progress=None,
        stop: Sequence[StopRule | None] | None = None,
    ) -> list[Completion]:
        """`stop`: per prompt, a rule on the answer's text so far that ends the row early when it returns True (the
        completion is then marked unfinished); None runs the row to its end or max_new_tokens."""
        # Longest first: similar lengths share a batch (little padding), and the first batch shows
        # at once whether memory suffices.
        order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
        results: list[Completion | None] = [None] * len(prompt_ids)
        generator = torch.Generator().manual_seed(seed)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            with gqa_attention(self.model), chunked_lm_head(self.model):
                outs = self._generate_batch([prompt_ids[i] for i in batch], sampling, generator,
                                            [stop[i] for i in batch] if stop else None)
            for i, out in zip(batch, outs, strict=True):
                results[i] = out
            if progress is not None:
                progress(len(batch), sum(o.num_tokens for o in outs))
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(
        self, prompts: list[list[int]], sampling: Sampling, generator: torch.Generator,
        stop: list[StopRule | None] | None = None,
    ) -> list[Completion]:
        device = self.model.device
        # The prompts of a batch usually open with the same tokens (chat template + system prompt): that
        # prefix is run once and its KV cache shared by every row; only the rest is prefilled per row.
        shared = shared_prefix_length(prompts)
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        rests = [p[shared:] for p in prompts]
        width = max(len(r) for r in rests)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        rest_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(rests):  # left padding (after the shared prefix): last tokens aligned
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            rest_mask[row, width - len(ids) :] = 1
        input_ids, rest_mask = input_ids.to(device), rest_mask.to(device)
        position_ids = shared + (rest_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([rest_mask.new_ones((len(prompts), shared)), rest_mask], dim=1)
        if self._preallocates():
            cache, logits = grouped_prefill(self.model, prompts[0][:shared], input_ids, rest_mask, position_ids,
                                            sampling.max_new_tokens)
        else:  # sliding windows and hybrids: transformers' own cache, one full-width prefill
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            if shared:
                prefill_prefix(self.model, prompts[0][:shared], cache, device)
                cache.batch_repeat_interleave(len(prompts))
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()

        generated: list[list[int]] = [[] for _ in prompts]
        stopped = [False] * len(prompts)  # ended by its stop rule
        alive = torch.arange(len(prompts), device=device)  # rows still generating
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        step_pos = position_ids[:, -1:]
        for step in range(sampling.max_new_tokens):
            next_ids = self._pick(logits, sampling, generator)
            rows = alive.tolist()
            for row, token in zip(rows, next_ids.tolist(), strict=True):
                generated[row].append(token)
            done = torch.isin(next_ids, eos)
            if stop:
                for at, row in enumerate(rows):
                    rule = stop[row]
                    if rule is not None and not done[at] and rule(self.tokenizer.decode(generated[row],
                                                                                          skip_special_tokens=True)):
                        done[at], stopped[row] = True, True
            if done.all() or step + 1 == sampling.max_new_tokens:
                break
            if done.any():
                # Drop finished rows from the batch and from the KV cache: the rest run faster.
                keep = fill_from_end(done)  # the KV cache moves one row per finished row, not all of them
                alive, next_ids, mask = alive[keep], next_ids[keep], mask[keep]
                step_pos = step_pos[keep]
                cache.batch_select_indices(keep)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            step_pos = step_pos + 1
            logits = self.model(
                input_ids=next_ids.unsqueeze(-1), attention_mask=mask, position_ids=step_pos, past_key_values=cache,
                use_cache=True, logits_to_keep=1,
            ).logits[:, -1, :].float()
        completions = []
        for row, tokens in enumerate(generated):
            text_tokens = [t for t in tokens if t not in self.eos_ids]
            text = self.tokenizer.decode(text_tokens, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # maybe a character cut off by max_new_tokens: left out, as vLLM does
                text = detokenize(self.tokenizer, prompts[row], text_tokens)
            finished = len(text_tokens) < len(tokens) and not stopped[row]
            completions.append(Completion(text, len(tokens), finished=finished))
        return completions

    def _preallocates(self) -> bool:
        """Full attention in every layer: the KV cache can be preallocated and prefilled group by group."""
        config = self.model.config
        layer_types = getattr(config, "layer_types", None) or ["full_attention"]
        return getattr(config, "sliding_window", None) is None and set(layer_types) == {"full_attention"}

    @staticmethod
    def _pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
        if sampling.greedy:
            return logits.argmax(-1)
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_probs)
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
