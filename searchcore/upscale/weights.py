"""Finding, downloading, verifying and loading upscaler weights, and trained upscaler folders.

Nothing here executes code from a weights file: ``.pth`` files load with
``torch.load(weights_only=True)``, ``.safetensors`` hold tensors only, and a FIFO or device
is refused before anything reads it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchcore.errors import WeightsError, first_line
from searchcore.fsutil import file_sha256, is_regular_file, read_json
from searchcore.upscale.registry import UpscalerSpec

if TYPE_CHECKING:
    import torch

DOWNLOAD_TIMEOUT_S = 60
CHUNK = 1 << 20


FOLDER_CONFIG = "upscaler_config.json"
FALLBACK_UPSCALER = "realesr-general-x4v3"


def load_upscaler_folder(folder: str | Path) -> tuple[UpscalerSpec, Path]:
    """``(spec, weights)`` of a trained upscaler folder (what ``train-upscaler`` writes).

    ``upscaler_config.json`` names the architecture, its arguments, the scale, the weights
    file and its sha256, which is checked here.
    """
    folder = Path(folder)
    path = folder / FOLDER_CONFIG
    try:
        cfg = read_json(path, 1 << 20)
        weights = folder / Path(str(cfg["weights"])).name
        spec = UpscalerSpec(
            name=str(cfg["name"]),
            arch=cfg.get("arch", "srvgg"),
            arch_kwargs=dict(cfg["arch_kwargs"]),
            scale=int(cfg["scale"]),
            url=None,
            sha256=str(cfg["sha256"]),
            filename=weights.name,
            description=f"trained by searchcore ({folder.name})",
        )
    except FileNotFoundError:
        raise WeightsError(f"upscaler folder {folder} has no {FOLDER_CONFIG}") from None
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise WeightsError(f"{path} is not a valid upscaler config ({first_line(exc)})") from None
    if not is_regular_file(weights):
        raise WeightsError(f"upscaler weights {weights} are missing")
    if file_sha256(weights) != spec.sha256:
        raise WeightsError(f"upscaler weights {weights} do not match the sha256 in {path}")
    return spec, weights


# --------------------------------------------------------------------------- weights


def resolve_weights(
    spec: UpscalerSpec,
    weights_path: Path | None,
    cache_dir: Path,
    allow_download: bool,
    *,
    allow_unverified: bool = False,
) -> Path:
    """Find the weights file for ``spec``; download it only when allowed.

    Order: ``weights_path`` if given (the user's own copy: it is not checked against the
    official sha256, but it is still loaded safely and shape-checked when the model is built);
    else ``cache_dir/realesrgan/<filename>``, which must match ``spec.sha256``; else a download
    of ``spec.url`` into that cache path, verified before it is moved into place.

    A spec without a known sha256 makes cached and downloaded files unverifiable; they are then
    refused unless ``allow_unverified=True``.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsError(f"upscaler weights not found: {path} (no such file)")
        return path

    cached = Path(cache_dir).expanduser() / "realesrgan" / spec.filename
    if cached.is_file():
        _check_digest(spec, cached, allow_unverified, what="cached file")
        return cached

    if spec.url is None:
        raise WeightsError(
            f"no weights for upscaler {spec.name} (it has no download URL): pass --weights PATH "
            f"or set SEARCHCORE_UPSCALER_WEIGHTS, or put {spec.filename} at {cached}"
        )
    if not allow_download:
        raise WeightsError(
            f"no weights for upscaler {spec.name}: pass --weights PATH or set "
            f"SEARCHCORE_UPSCALER_WEIGHTS, or put {spec.filename} at {cached}, or allow downloads "
            f"(SEARCHCORE_ALLOW_DOWNLOAD=1) to fetch {spec.url}"
        )
    if spec.sha256 is None and not allow_unverified:
        raise WeightsError(
            f"upscaler {spec.name} has no known sha256, so a download from {spec.url} cannot be "
            "verified; download it yourself and pass it with --weights PATH"
        )
    _download(spec, spec.url, cached)
    return cached


def _check_digest(spec: UpscalerSpec, path: Path, allow_unverified: bool, what: str) -> None:
    if spec.sha256 is None:
        if allow_unverified:
            return
        raise WeightsError(
            f"{what} {path} cannot be verified: upscaler {spec.name} has no known sha256; "
            "pass it explicitly with --weights PATH if you trust it"
        )
    actual = file_sha256(path)
    if actual != spec.sha256:
        raise WeightsError(
            f"{what} {path} does not match the official {spec.name} weights "
            f"(sha256 {actual[:12]}..., expected {spec.sha256[:12]}...): delete it so it is "
            "downloaded again, or pass your own copy with --weights PATH"
        )


def _download(spec: UpscalerSpec, url: str, target: Path) -> None:
    """Fetch ``url`` to ``target`` through a temp file in the same folder.

    The file only appears under its final name, by an atomic rename, once its digest matched:
    an interrupted or corrupt download can never be mistaken for a good cached file.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {target.parent}: {exc}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            ):
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise WeightsError(
                f"could not download {spec.name} weights: HTTP {exc.code} {exc.reason}; URL: {url}"
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise WeightsError(
                f"could not download {spec.name} weights (offline or unreachable?): {reason}; "
                f"URL: {url}"
            ) from exc
        if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
            raise WeightsError(
                f"download of {spec.name} from {url} is corrupt or not the official file "
                f"(sha256 {digest.hexdigest()[:12]}..., expected {spec.sha256[:12]}...); "
                "nothing was saved"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict without executing code from the file.

    ``.safetensors`` files hold tensors only; ``.pth`` files go through ``torch.load`` with
    ``weights_only=True``, which refuses any pickle that names a callable. Real-ESRGAN files wrap
    the state dict as ``{"params_ema": ...}`` and/or ``{"params": ...}``; the EMA weights are
    preferred, as in Real-ESRGAN's own loader.
    """
    import torch

    path = Path(path)
    if not is_regular_file(path):  # a FIFO or device would block torch.load forever
        raise WeightsError(f"cannot load upscaler weights {path.name}: not a regular file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here: unpickling, zip, EOF, OS errors
        # torch's own messages run to a page and suggest retrying with weights_only=False;
        # say what is wrong in one line instead (the original stays chained for debugging).
        if "Unsupported global" in str(exc):
            why = "it holds Python objects besides tensors (refused: loading them could run code)"
        elif isinstance(exc, OSError):
            why = first_line(exc)
        else:
            why = "corrupt, truncated or not a weights file"
        raise WeightsError(f"cannot load upscaler weights {path}: {why}") from exc

    if isinstance(obj, Mapping):
        for key in ("params_ema", "params"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise WeightsError(
            f"upscaler weights {path} hold no state dict "
            "(expected 'params_ema', 'params' or a mapping of names to tensors)"
        )
    return dict(obj)
