"""Files shipped inside the package, found by name: accelerate launch profiles with their DeepSpeed JSONs
(launch/ in the repository) and recipes (configs/).

In the repository dpo_scale/launch_profiles and dpo_scale/recipes are symlinks to launch/ and configs/; a wheel
holds copies of their files. Either way importlib.resources finds them next to the installed package, so
`--launch ddp` and `--config smollm2_cpu` work from any folder after `pip install`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from dpo_scale.errors import DpoScaleError


def _folder(name: str) -> Path:
    # accelerate and DeepSpeed open these by path, so the package must sit on a file system (pip installs do;
    # a zip import would not work).
    return Path(str(files("dpo_scale") / name))


def launch_dir() -> Path:
    return _folder("launch_profiles")


def recipes_dir() -> Path:
    return _folder("recipes")


def launch_profile_names() -> list[str]:
    return sorted(p.stem for p in launch_dir().glob("*.yaml"))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def launch_profile_path(profile: str) -> Path:
    """A profile name (`ddp`, shipped with the package) or the path of a .yaml accelerate config."""
    path = Path(profile).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    packaged = launch_dir() / f"{profile}.yaml"
    if "/" not in profile and packaged.is_file():
        return packaged
    raise DpoScaleError(f"unknown launch profile '{profile}' (known: {', '.join(launch_profile_names())}, "
                        "or the path of an accelerate .yaml config)")


def recipe_path(config: str) -> Path:
    """`--config VALUE`: an existing file, else the recipe of that name shipped with the package
    (`smollm2_cpu` or `smollm2_cpu.yaml`)."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    name = config[:-5] if config.endswith(".yaml") else config
    packaged = recipes_dir() / f"{name}.yaml"
    if "/" not in config and packaged.is_file():
        return packaged
    raise DpoScaleError(f"{config}: recipe file not found, and no packaged recipe of that name "
                        f"(packaged: {', '.join(recipe_names())})")


def deepspeed_config_path(value: str, profile: Path) -> Path:
    """A profile's `deepspeed_config_file`: absolute, relative to the working folder (as accelerate reads it),
    or else the file of that name next to the profile (the packaged profiles name `launch/ds_*.json`)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    if path.is_file():
        return path.resolve()
    beside = profile.parent / path.name
    if beside.is_file():
        return beside
    raise DpoScaleError(f"{profile}: deepspeed_config_file '{value}' not found (looked in {Path.cwd()} and "
                        f"{profile.parent})")
