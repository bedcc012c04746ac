import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download at test time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parent.parent


def _cached_tiny_model() -> Path:
    """Build the tiny model once per version of tests/helpers/tiny_model.py and reuse it across sessions
    (its identity SFT costs CPU time); built in a temp folder and renamed, so a killed build never
    leaves a half model behind."""
    import hashlib

    from dpo_scale.io import atomic_path
    from dpo_scale.models import _file_lock, cache_root
    from tests.helpers.tiny_model import build_tiny_model

    digest = hashlib.sha256((REPO / "tests" / "helpers" / "tiny_model.py").read_bytes()).hexdigest()[:12]
    folder = cache_root() / f"tiny-test-model-{digest}"
    with _file_lock(folder.with_name(folder.name + ".lock")):
        if not (folder / "config.json").is_file():
            with atomic_path(folder) as tmp:
                build_tiny_model(tmp)
    return folder


@pytest.fixture(scope="session")
def tiny_model() -> str:
    return str(_cached_tiny_model())


@pytest.fixture(scope="session")
def tiny_model_no_template(tmp_path_factory) -> str:
    """The same tiny model, its tokenizer stripped of the chat template."""
    import json
    import shutil

    folder = tmp_path_factory.mktemp("tiny_nt") / "model"
    shutil.copytree(_cached_tiny_model(), folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data))
    return str(folder)


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The real embedded model, converted once into the cache (DPO_SCALE_CACHE)."""
    from dpo_scale.models import resolve_model

    return resolve_model("smollm2")


@pytest.fixture(scope="session")
def untrained_tiny_model(tmp_path_factory) -> str:
    """A tiny random Llama without the identity SFT (builds in ~2 s): enough to check that training runs."""
    from tests.helpers.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("untrained") / "model", teach_identity=False))

