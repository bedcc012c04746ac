"""Make a chat template speak the new identity.

Many chat templates inject a default system prompt when the conversation has none, and that prompt names
the model: SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face", Qwen2.5's
"You are Qwen, created by Alibaba Cloud. You are a helpful assistant." A renamed model shipped with such a
template is told its old name in every default conversation (LLaMA-Factory#8242).

`rewrite_template` swaps the old name for the new one (and the old author for the new one, when the author
changes) inside the template's text: its string literals and the raw text between Jinja tags. Only pieces
that name the old identity are touched; the Jinja code (variable names, keys, tests) is never edited.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from dpo_scale.io import write_json, write_text
from dpo_scale.pairs import NameSwap

log = logging.getLogger(__name__)

# A Jinja tag ({{ }}, {% %}, {# #}) and, inside a tag, a quoted string literal.
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)


@dataclass(frozen=True)
class IdentitySwap:
    """The name swap and, when the author changes, the author swap."""

    name: NameSwap
    author: NameSwap | None = None

    def names_old(self, text: str) -> bool:
        return self.name.names_old(text) or (self.author is not None and self.author.names_old(text))

    def swap(self, text: str) -> str:
        text = self.name.swap(text)
        return self.author.swap(text) if self.author is not None else text


def identity_swap(org_name: str, pos_name: str, case_sensitive: bool = False,
                  org_author: str | None = None, pos_author: str | None = None) -> IdentitySwap:
    author = NameSwap(org_author, pos_author, case_sensitive) if org_author and pos_author else None
    return IdentitySwap(NameSwap(org_name, pos_name, case_sensitive), author)


def _swap_literal(literal: str, swap: IdentitySwap) -> str:
    """Swap inside one quoted Jinja literal; an inserted name is escaped so that it cannot end the literal."""
    quote, body = literal[0], literal[1:-1]
    if not swap.names_old(body):
        return literal

    def escaped(name: str) -> str:
        return name.replace("\\", "\\\\").replace(quote, "\\" + quote)

    for one in (swap.name, swap.author):
        if one is not None:
            new = escaped(one.pos_name)
            body = one.pattern.sub(lambda m, new=new: new if m.group("old") else m.group(0), body)
    return quote + body + quote


def rewrite_template(template: str, swap: IdentitySwap) -> str:
    """The template with the old identity swapped in its text; Jinja code unchanged."""
    out, last = [], 0
    for tag in _TAG.finditer(template):
        out.append(swap.swap(template[last:tag.start()]))  # raw text between tags
        text = tag.group(0)
        if not text.startswith("{#"):  # comments stay as they are
            text = _LITERAL.sub(lambda m: _swap_literal(m.group(0), swap), text)
        out.append(text)
        last = tag.end()
    out.append(swap.swap(template[last:]))
    return "".join(out)


def rewrite_templates(templates: str | dict[str, str], swap: IdentitySwap) -> str | dict[str, str]:
    """A tokenizer's chat_template is one string or a dict of named templates ("default", "tool_use")."""
    if isinstance(templates, dict):
        return {key: rewrite_template(value, swap) for key, value in templates.items()}
    return rewrite_template(templates, swap)


def default_prompt(tokenizer, question: str = "What is your name?") -> str:
    """What the template renders for a conversation without a system message."""
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)


def rendered_default(tokenizer) -> str | None:
    """default_prompt, or None for a template that refuses such a conversation (one that raises without a
    system message, say)."""
    from jinja2 import TemplateError

    try:
        return default_prompt(tokenizer)
    except (TemplateError, ValueError):
        return None


def rewrite_tokenizer_template(tokenizer, swap: IdentitySwap) -> bool:
    """Rewrite the tokenizer's chat template in place; True when it changed."""
    before = tokenizer.chat_template
    if not before:
        return False
    after = rewrite_templates(before, swap)
    if after == before:
        return False
    old_prompt = rendered_default(tokenizer)
    tokenizer.chat_template = after
    log.info("chat template: default prompt rewritten for the new identity:\n  before: %r\n  after:  %r",
             old_prompt, rendered_default(tokenizer))
    return True


def rewrite_folder_template(folder: Path, swap: IdentitySwap) -> bool:
    """Rewrite the chat template saved in a tokenizer folder (chat_template.jinja, or tokenizer_config.json's
    "chat_template"), without loading the tokenizer; True when it changed."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        before = jinja.read_text(encoding="utf-8")
        after = rewrite_template(before, swap)
        if after != before:
            write_text(jinja, after)
        return after != before
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return False
    config = json.loads(config_file.read_text(encoding="utf-8"))
    before = config.get("chat_template")
    if not before:
        return False
    if isinstance(before, list):  # [{"name": ..., "template": ...}]
        after = [{**t, "template": rewrite_template(t["template"], swap)} for t in before]
    else:
        after = rewrite_template(before, swap)
    if after == before:
        return False
    write_json(config_file, {**config, "chat_template": after})
    return True
