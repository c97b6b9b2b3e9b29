"""ONNX Runtime beside torch: a model folder's towers exported, and an embedder that runs them.

``searchcore model export`` (:func:`export_onnx`) writes into a model folder:

- ``image.onnx`` and ``text.onnx``: the two towers, each ending in the L2 normalisation that
  :class:`~searchcore.embed.ClipEmbedder` applies (``encode_image(x, normalize=True)``,
  ``encode_text(tokens, normalize=True)``); batch axis dynamic, opset 17;
- with ``int8``, ``image.int8.onnx`` and ``text.int8.onnx``: the same in int8
  (:mod:`.quantise`: convolutions statically, with activation ranges calibrated on photos
  other than the fidelity samples; MatMul/Gemm dynamically);
- ``onnx.json``: each file's sha256, the torch weights' fingerprint they were exported from,
  the input each tower takes, and the fidelity report: the cosine of every variant's
  embeddings to torch's on sample photos and texts.

The towers take what ClipEmbedder feeds its own model: photos go through the same ``prepare``
and ``collate`` (the folder's open_clip transform, squashed to the model's square), texts through
the same tokenizer. So :class:`OnnxEmbedder` keeps ClipEmbedder's preprocessing and replaces only
the forward pass (and lets go of the torch weights).

The towers are all a model folder runs through a network: its attribute heads
(:mod:`.heads`) read the embedding either runtime returns, so they need no export; they stay
bound to the torch weights' fingerprint (``OnnxEmbedder.torch_fingerprint``), whichever runtime
serves.

Fingerprints (what an index records and checks): the fp32 export serves under the torch
weights' own fingerprint when every sample embedding is at cosine >= :data:`FIDELITY_TOLERANCE`
to torch's, so an index built with either runtime serves with the other. int8 always gets a
fingerprint of its own: an index must be built with int8 to be served with it. ``auto`` builds
with int8 only where ``onnx.json`` records int8's retrieval cost, measured by ``model export
--int8 --catalog`` on the catalog's held-out products, as within the noise
(:mod:`searchcore.training.runtime_cost`); it serves an index with the runtime family it was
built with.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchcore.errors import ConfigError, WeightsError
from searchcore.fsutil import read_json, read_regular, write_json_atomic

log = logging.getLogger(__name__)

ONNX_MANIFEST = "onnx.json"
FORMAT = 1
OPSET = 17
# fp32 ONNX serves a torch-built index (same fingerprint) only at cosine >= this to torch on
# every sample photo and text. It is the bar this project already holds its own shortcuts to:
# index builds shrink photos with a box filter (``prepare``) and resize them in batches
# (``collate``), accepted at cosine >= 0.9999 to open_clip's own path, so a runtime within it
# adds no error of a new size. Two unit vectors at cosine c lie sqrt(2(1 - c)) apart: at 0.9999
# no score moves by more than 0.014, and only products scored within that of each other can
# swap places. A faithful fp32 export measures far inside it (0.9999996-0.9999998 on the
# shipped model and on ViT-B-32: float sums in another order); the bar catches broken exports,
# it is not a budget to spend. int8 gets a fingerprint of its own whatever it measures (0.9997
# on the shipped model, about 0.99 on ViT-B-32): its error is a change of model, kept visible.
FIDELITY_TOLERANCE = 0.9999
TOWERS = ("image", "text")
VARIANTS = {"fp32": "", "int8": ".int8"}  # file name infix
RUNTIME_VARIANT = {"onnx": "fp32", "onnx-int8": "int8", "auto": "fp32"}
CALIBRATION_PHOTOS = 64  # int8: photos the convolutions' activation ranges are measured on
MAX_ONNX_BYTES = 2 << 30  # protobuf's limit for one file
SAMPLE_TEXTS = (  # shoppers' words, an empty one, one past any context length, accents
    *("red sneakers with white soles", "navy striped t-shirt", "black leather handbag"),
    *("a blue cotton dress", "green ceramic mug", "white watch with a brown strap"),
    *("yellow cap", "grey fleece hoodie with a black hood", "pink water bottle", "teal vase"),
    *("something warm for winter", "lamp", "", "ÉTÉ 2024: robe à pois"),
    "Kids' orange backpack, checked, with two zipped pockets and padded straps for school",
    "beige linen dress in a long, loose cut " * 6,
)


def sample_photos(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    """``n`` deterministic product photos from the demo shop's drawing (every kind and colour
    in turn), a quarter of them 3:4 portraits (squashed on the way in), and one of noise."""
    from searchcore.demo.draw import render_product
    from searchcore.demo.world import COLOURS, KINDS

    kinds, colours = list(KINDS), list(COLOURS)
    photos = []
    for i in range(max(n - 1, 1)):
        kind = KINDS[kinds[i % len(kinds)]]
        colour = colours[(5 * i) % len(colours)]
        pattern = kind.patterns[i % len(kind.patterns)]
        attrs = {"kind": kind.name, "colour": colour, "pattern": pattern}
        img = render_product(attrs, size, np.random.default_rng([seed, i]))
        photos.append(img.resize((size * 3 // 4, size)) if i % 4 == 3 else img)
    noise = np.random.default_rng([seed, n]).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return [*photos, Image.fromarray(noise)][:n]


def export_onnx(
    embedder: Any,
    folder: str | Path,
    *,
    int8: bool = False,
    photos: Sequence[Image.Image] | None = None,
    texts: Sequence[str] | None = None,
    samples: int = 24,
    calibration: Sequence[Image.Image] | None = None,
) -> dict[str, Any]:
    """Write ``embedder``'s towers into ``folder`` as ONNX, check them, and return the manifest
    written to ``onnx.json``.

    ``embedder`` is a :class:`~searchcore.embed.ClipEmbedder` loaded from ``folder`` (its
    fingerprint is recorded as the weights the files come from). Fidelity is measured on
    ``photos`` (default: ``samples`` generated ones) and ``texts`` (default:
    :data:`SAMPLE_TEXTS`), in one batch and one at a time. int8's convolutions are calibrated
    on ``calibration`` (default: :data:`CALIBRATION_PHOTOS` generated ones of another seed than
    the samples'), photos that should be the shop's own and not ``photos``.
    """
    import torch

    folder = Path(folder)
    size = 2 * embedder.image_size
    photos = list(photos) if photos is not None else sample_photos(samples, size)
    texts = list(texts) if texts is not None else list(SAMPLE_TEXTS)
    if len(photos) < 2 or len(texts) < 2:
        raise ConfigError("the fidelity check needs at least 2 sample photos and 2 texts")
    clear_export(folder)  # onnx.json first: no reader pairs it with half-written files
    inputs = {
        "image": np.ascontiguousarray(embedder.preprocess_images(photos).numpy(), np.float32),
        "text": embedder.tokenizer(texts).numpy(),
    }
    reference = {
        "image": embedder.embed_pixels(torch.from_numpy(inputs["image"])),
        "text": embedder.embed_texts(texts),
    }
    names = {"image": "pixels", "text": "tokens"}
    from searchcore.embed.onnx_trace import export_towers

    examples = {t: torch.from_numpy(inputs[t][:2]) for t in TOWERS}
    export_towers(embedder.model, examples, names, {t: folder / f"{t}.onnx" for t in TOWERS}, OPSET)
    quantisation: dict[str, Any] = {}
    if int8:
        from searchcore.embed.quantise import quantise_tower

        source = "given photos" if calibration else "generated photos (seed 1)"
        calibration = list(calibration or sample_photos(CALIBRATION_PHOTOS, size, seed=1))
        pixels = embedder.preprocess_images(calibration).numpy()
        quantisation["image"] = quantise_tower(
            folder / "image.onnx",
            folder / "image.int8.onnx",
            pixels,
            input_name=names["image"],
            source=source,
        )
        quantisation["text"] = quantise_tower(folder / "text.onnx", folder / "text.int8.onnx")
    variants: dict[str, Any] = {}
    for variant, infix in VARIANTS.items():
        if variant == "int8" and not int8:
            continue
        data = {t: read_regular(folder / f"{t}{infix}.onnx", MAX_ONNX_BYTES) for t in TOWERS}
        sessions = {t: make_session(b, threads()) for t, b in data.items()}
        fidelity = measure_fidelity(reference, inputs, sessions)
        variants[variant] = {
            "files": {
                t: {
                    "path": f"{t}{infix}.onnx",
                    "sha256": hashlib.sha256(b).hexdigest(),
                    "bytes": len(b),
                }
                for t, b in data.items()
            },
            "fidelity": fidelity,
            "within_tolerance": fidelity["min_cosine"] >= FIDELITY_TOLERANCE,
        }
        if variant == "int8":
            variants[variant]["quantisation"] = quantisation
    manifest = {
        "format": FORMAT,
        "opset": OPSET,
        "tolerance": FIDELITY_TOLERANCE,
        "model": {
            "spec": embedder.spec,
            "torch_fingerprint": embedder.fingerprint,
            "dim": int(embedder.dim),
            "image_size": int(embedder.image_size),
            "geometry": str(embedder.geometry),
            "preprocessing": "the folder's open_clip transform through ClipEmbedder.collate",
        },
        "inputs": {  # what ClipEmbedder.collate and the folder's tokenizer give
            "image": {"name": "pixels", "dtype": "float32", "shape": list(inputs["image"].shape)},
            "text": {"name": "tokens", "dtype": "int64", "shape": list(inputs["text"].shape)},
        },
        "outputs": "L2-normalised float32 embeddings (batch, dim)",
        "towers": list(TOWERS),
        "samples": {"photos": len(photos), "texts": len(texts)},
        "versions": {n: metadata.version(n) for n in ("torch", "onnxruntime", "onnx")},
        "variants": variants,
    }
    write_json_atomic(folder / ONNX_MANIFEST, manifest)
    return manifest


def clear_export(folder: Path) -> None:
    """Remove an earlier export (its manifest first), and what a killed one left behind."""
    import shutil

    from searchcore.embed.quantise import SCRATCH_PREFIX

    for name in (ONNX_MANIFEST, *(f"{t}{i}.onnx" for i in VARIANTS.values() for t in TOWERS)):
        (folder / name).unlink(missing_ok=True)
    for scratch in folder.glob(f"{SCRATCH_PREFIX}*"):
        shutil.rmtree(scratch, ignore_errors=True)


def threads() -> int:
    """torch's intra-op thread count here and now: the ONNX sessions follow it (``--threads``,
    ``SEARCHCORE_THREADS``, and the index build's one thread per lane)."""
    import torch

    return max(1, torch.get_num_threads())


def make_session(model: bytes, intra_threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: it warns about every unused initializer
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_session(session: Any, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float32, copy=False)


def measure_fidelity(
    reference: dict[str, np.ndarray], inputs: dict[str, np.ndarray], sessions: dict[str, Any]
) -> dict[str, Any]:
    """Cosine of the sessions' embeddings to torch's (``reference``), in one batch and one at a
    time, and whether retrieval among the samples picks the same nearest neighbours."""
    out: dict[str, Any] = {}
    got: dict[str, np.ndarray] = {}
    for tower in TOWERS:
        x, ref = inputs[tower], reference[tower]
        got[tower] = run_session(sessions[tower], x)
        ones = np.concatenate([run_session(sessions[tower], x[i : i + 1]) for i in range(len(x))])
        cos, cos1 = (ref * got[tower]).sum(1), (ref * ones).sum(1)
        out[tower] = {
            "n": len(x),
            "min_cosine": round(float(cos.min()), 8),
            "mean_cosine": round(float(cos.mean()), 8),
            "batch_of_1_min_cosine": round(float(cos1.min()), 8),
        }
    ref_i, ref_t, new_i, new_t = reference["image"], reference["text"], got["image"], got["text"]
    out["text_to_photo_top1_agreement"] = _top1_agreement(ref_t @ ref_i.T, new_t @ new_i.T)
    self_match = np.eye(len(ref_i), dtype=bool)  # a photo is not its own neighbour
    out["photo_to_photo_top1_agreement"] = _top1_agreement(
        np.where(self_match, -2, ref_i @ ref_i.T), np.where(self_match, -2, new_i @ new_i.T)
    )
    out["min_cosine"] = min(
        min(out[t]["min_cosine"], out[t]["batch_of_1_min_cosine"]) for t in TOWERS
    )
    return out


def _top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return round(float((a.argmax(1) == b.argmax(1)).mean()), 4)


def runtime_fingerprint(torch_fingerprint: str, variant: str, entry: dict[str, Any]) -> str:
    """The weights' own fingerprint for a verified fp32 export (see the module docstring);
    otherwise one of the variant's own, which names its files' bytes too."""
    if variant == "fp32" and entry.get("within_tolerance") is True:
        return torch_fingerprint
    shas = ":".join(entry["files"][t]["sha256"] for t in TOWERS)
    return hashlib.sha256(f"{torch_fingerprint}:onnx-{variant}:{shas}".encode()).hexdigest()


def read_export(folder: Path) -> dict[str, Any]:
    """A folder's ``onnx.json``, refused (WeightsError) unless it has the fields loading needs."""
    path = folder / ONNX_MANIFEST
    try:
        manifest = read_json(path)
        ok = manifest["format"] == FORMAT and isinstance(
            manifest["model"]["torch_fingerprint"], str
        )
        for entry in manifest["variants"].values():
            for tower in TOWERS:
                name = entry["files"][tower]["path"]
                ok = ok and isinstance(name, str) and Path(name).name == name and name != ".."
                ok = ok and isinstance(entry["files"][tower]["sha256"], str)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise WeightsError(
            f"{path} is damaged or from another searchcore version; re-run "
            f"`searchcore model export --model {folder} --out {folder}`"
        )
    return manifest


def record_retrieval_cost(folder: Path, cost: dict[str, Any]) -> None:
    """Record int8's measured retrieval cost and verdict in ``folder``'s ``onnx.json``
    (:func:`searchcore.training.runtime_cost.measure_int8`): ``auto`` reads the verdict."""
    manifest = read_export(folder)
    if "int8" not in manifest["variants"]:
        raise ConfigError(f"model folder {folder} has no int8 export to record a cost for")
    manifest["variants"]["int8"]["retrieval_cost"] = cost
    write_json_atomic(folder / ONNX_MANIFEST, manifest)


def int8_is_default(manifest: dict[str, Any]) -> bool:
    """Did the export measure int8's retrieval loss to be within the noise (then ``auto``
    builds with int8)? Anything else in the record, or none, means no."""
    cost = manifest["variants"].get("int8", {}).get("retrieval_cost")
    return isinstance(cost, dict) and cost.get("within_noise") is True


def with_runtime(embedder: Any, folder: Path, runtime: str, *, int8: bool = True) -> Any:
    """``load_embedder``'s runtime choice for a model folder's ``embedder`` (torch, loaded).

    ``onnx`` / ``onnx-int8``: an :class:`OnnxEmbedder` on the folder's export, or an error that
    says how to export. ``auto``: the int8 export where its retrieval cost was measured within
    the noise (:func:`int8_is_default`; not with ``int8=False``, as for serving an index built
    without it); else the fp32 export when it is there, made from the weights the folder holds
    now, and within tolerance; else ``embedder`` itself, with the reason logged. ONNX files
    whose bytes are not the ones ``onnx.json`` recorded are refused either way.
    """
    if runtime == "torch":
        return embedder
    variant = RUNTIME_VARIANT[runtime]
    export = f"searchcore model export --model {folder} --out {folder}" + (
        " --int8" if variant == "int8" else ""
    )
    if not (folder / ONNX_MANIFEST).exists():
        if runtime != "auto":
            raise ConfigError(f"model folder {folder} has no ONNX export; run `{export}`")
        log.info("model folder %s has no ONNX export: serving with torch", folder)
        return embedder
    manifest = read_export(folder)
    if runtime == "auto" and int8 and int8_is_default(manifest):
        variant = "int8"
        log.info(
            "model folder %s: int8, its retrieval cost measured within the noise at export (%s)",
            folder,
            manifest["variants"]["int8"]["retrieval_cost"].get("why"),
        )
    entry = manifest["variants"].get(variant)
    if entry is None:
        raise ConfigError(f"model folder {folder} has no {variant} ONNX export; run `{export}`")
    recorded = manifest["model"]["torch_fingerprint"]
    if recorded != embedder.fingerprint or manifest["model"].get("dim") != embedder.dim:
        why = f"the ONNX files in {folder} were exported from other weights than it holds now"
        if runtime != "auto":
            raise WeightsError(f"{why}; re-run `{export}`")
        log.warning("%s: serving with torch (re-run `%s`)", why, export)
        return embedder
    if runtime == "auto" and variant == "fp32" and entry.get("within_tolerance") is not True:
        log.warning(
            "the ONNX export in %s is below cosine %s to torch (%s): serving with torch",
            folder,
            FIDELITY_TOLERANCE,
            entry.get("fidelity", {}).get("min_cosine"),
        )
        return embedder
    files = {t: (folder / entry["files"][t]["path"], entry["files"][t]["sha256"]) for t in TOWERS}
    onnx = OnnxEmbedder(
        embedder,
        files,
        runtime="onnx-int8" if variant == "int8" else "onnx",
        fingerprint=runtime_fingerprint(recorded, variant, entry),
    )
    embedder.model.to("meta")  # the torch weights are not needed any more: free them
    return onnx


class OnnxEmbedder:
    """A model folder's ONNX towers behind the :class:`~searchcore.embed.BatchEmbedder`
    protocol, with ClipEmbedder's own preprocessing, tokenizer and batching.

    Each tower has one onnxruntime session per intra-op thread count, made on first use at
    that count from bytes whose sha256 is checked against ``onnx.json``: ``threads()`` follows
    torch's setting, so ``--threads`` applies as it does to torch, and an index build's lanes
    (one torch thread each) share one single-threaded session. ``InferenceSession.run`` may
    be called from several threads at once. Each session holds its own copy of the tower's
    weights: a process that serves on N threads and builds in lanes holds two.
    """

    has_text = True
    device = "cpu"

    def __init__(
        self,
        preprocessing: Any,
        files: dict[str, tuple[Path, str]],
        *,
        runtime: str,
        fingerprint: str,
    ) -> None:
        self._pre = preprocessing  # a ClipEmbedder: prepare, collate, tokenizer (no forward)
        self.spec = preprocessing.spec
        self.dim = int(preprocessing.dim)
        self.batch_size = preprocessing.batch_size
        self.tokenizer = preprocessing.tokenizer
        self.transform = preprocessing.transform
        self.geometry = preprocessing.geometry
        self.runtime = runtime
        self.files = files
        self._fingerprint = fingerprint
        self._sessions: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()
        for tower in TOWERS:  # a damaged or changed file is refused now, not at the first query
            self._session(tower)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def torch_fingerprint(self) -> str:
        """The fingerprint of the torch weights exported (what attribute heads are bound to)."""
        return self._pre.fingerprint

    @property
    def image_size(self) -> int:
        return int(self._pre.image_size)

    def _session(self, tower: str) -> Any:
        key = (tower, threads())
        with self._lock:
            if key not in self._sessions:
                path, sha = self.files[tower]
                try:
                    data = read_regular(path, MAX_ONNX_BYTES)
                except OSError as exc:
                    raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from None
                if hashlib.sha256(data).hexdigest() != sha:
                    raise WeightsError(
                        f"{path} is not the file {ONNX_MANIFEST} recorded (changed or damaged "
                        f"since export); re-run `searchcore model export --model {path.parent} "
                        f"--out {path.parent}`"
                    )
                self._sessions[key] = make_session(data, key[1])
            return self._sessions[key]

    def prepare(self, img: Image.Image) -> np.ndarray:
        return self._pre.prepare(img)

    def collate(self, arrays: Sequence[np.ndarray]) -> Any:
        return self._pre.collate(arrays)

    def preprocess(self, img: Image.Image) -> Any:
        return self._pre.preprocess(img)

    def preprocess_images(self, images: Sequence[Image.Image]) -> Any:
        return self._pre.preprocess_images(images)

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        """Embed an already preprocessed ``(n, 3, H, W)`` batch (``collate``'s tensor)."""
        x = np.ascontiguousarray(np.asarray(pixels), dtype=np.float32)
        if not len(x):
            return np.zeros((0, self.dim), np.float32)
        return run_session(self._session("image"), x)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = [
            self.embed_pixels(self.preprocess_images(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = [
            run_session(
                self._session("text"),
                self.tokenizer(list(texts[i : i + self.batch_size])).numpy(),
            )
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
