"""The deployment's own, secret privacy parameter set: created once, kept beside the processor
key, refused when it is the public development set.

Why: the seed of a parameter set fixes the projection and the group hash (or the quantizer's
rotation). ``PrivacyParams.default()`` has its seed in the source code, so with it anyone could
compute the group of any appearance and follow a person's group across cameras. A deployment
must therefore run with a seed drawn from OS entropy that only its processors hold: the same
protection as the processors' private key (a 0700 directory, a 0600 file created exclusively),
because it is the same kind of secret. Edges, sinks and analysts never need it: the warehouse
carries only the public figures of each version (``privacy_params``), and every record carries
its version, so estimators never mix parameter sets.

Where a processor's parameter set comes from, in order:
1. ``processor.privacy_params`` (a calibrated file written by ``flowctl privacy calibrate``);
2. ``<keys.dir>/privacy-params.json``, created by ``flowctl keys init`` (and rotated by
   ``flowctl privacy rotate``);
3. nothing: the processor refuses to start and says what to run. The public development set
   is used only when ``processor.allow_development_params`` is set, which only tests of pure
   logic need (the demo and the integration tests provision a secret set like a deployment).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

from pipeline.privacy.params import DEFAULT_SEED, ParamsError, PrivacyParams

__all__ = ["PARAMS_FILE", "deployment_params_path", "ensure_deployment_params", "rotate_deployment_params",
           "resolve_params", "load_params", "is_development"]

log = logging.getLogger(__name__)

PARAMS_FILE = "privacy-params.json"


def deployment_params_path(key_dir: Path) -> Path:
    return Path(key_dir) / PARAMS_FILE


def is_development(params: PrivacyParams) -> bool:
    """The public development seed: anyone can recompute its groups."""
    return params.seed == DEFAULT_SEED


def _new_version() -> str:
    return f"pp-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _write_secret(path: Path, params: PrivacyParams) -> None:
    """Write a parameter file readable by its owner only, never over an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(params.to_json_dict(), indent=2, sort_keys=True) + "\n")
    os.link(tmp, path)  # fails if another process created the file meanwhile: first one wins
    tmp.unlink()


def ensure_deployment_params(key_dir: Path, profile: str = "flow") -> tuple[PrivacyParams, bool]:
    """The deployment's parameter set, creating it with a fresh secret seed on first use.
    Returns (params, created)."""
    path = deployment_params_path(key_dir)
    if path.exists():
        return PrivacyParams.load(path), False
    params = PrivacyParams.profile(profile).rotated(_new_version())
    try:
        _write_secret(path, params)
    except FileExistsError:
        return PrivacyParams.load(path), False
    log.info("created privacy parameter set %s in %s", params.version, path)
    return params, True


def rotate_deployment_params(key_dir: Path) -> tuple[PrivacyParams, PrivacyParams]:
    """A new version with a new secret seed; the old file is kept (as privacy-params.<version>.json)
    so its version's records can still be explained, and is never used again for grouping.
    Returns (old, new). Groups before and after are unrelated, so flows are estimated per version."""
    path = deployment_params_path(key_dir)
    if not path.exists():
        raise ParamsError(f"no deployment parameter set in {key_dir}: run `flowctl keys init` first")
    old = PrivacyParams.load(path)
    new = old.rotated(_new_version())
    archived = path.with_name(f"privacy-params.{old.version}.json")
    os.replace(path, archived)
    _write_secret(path, new)
    return old, new


def resolve_params(explicit: Path | None, key_dir: Path, allow_development: bool = False) -> PrivacyParams:
    """The parameter set a processor must use (see the module docstring for the order)."""
    if explicit is not None:
        params = PrivacyParams.load(explicit)
        source = str(explicit)
    elif deployment_params_path(key_dir).exists():
        params = PrivacyParams.load(deployment_params_path(key_dir))
        source = str(deployment_params_path(key_dir))
    elif allow_development:
        log.warning("using the PUBLIC development privacy parameter set: anyone can compute its groups")
        return PrivacyParams.default()
    else:
        raise ParamsError(
            f"no privacy parameter set: none configured (processor.privacy_params) and none in {key_dir}. "
            "Run `flowctl keys init` on the processor host (creates the processor key and a secret parameter "
            "set beside it), or `flowctl privacy calibrate` and set FLOW_PROCESSOR__PRIVACY_PARAMS to its file.")
    if is_development(params) and not allow_development:
        raise ParamsError(
            f"{source} holds the public development seed, so anyone could compute its groups. "
            "Create a secret set with `flowctl keys init` (or `flowctl privacy rotate`), or recalibrate with "
            "`flowctl privacy calibrate`, which draws a fresh seed.")
    return params


def load_params(settings) -> PrivacyParams:
    """The processor's parameter set for these settings (pipeline.settings.Settings)."""
    ps = settings.processor
    return resolve_params(ps.privacy_params, settings.keys.dir, ps.allow_development_params)
