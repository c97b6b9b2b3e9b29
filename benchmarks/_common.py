"""What every benchmark script shares: machine details, percentiles, tables and result files.

Each script records the machine it ran on (CPU model, cores, torch threads, load average at
start and end) next to its figures, so a run taken while the machine was busy is visible as
such. Results go to ``benchmarks/results/<name>.json`` and ``<name>.md`` (and PNG plots);
scratch data (generated catalogs, indexes, cached embeddings) to ``benchmarks/.work/``.

Nothing here imports torch at module import; scripts import this module as ``_common`` (they
are run as ``python benchmarks/<script>.py``, which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WORK = HERE / ".work"
# ../shared from the project root: real photos and weights, read in place, never copied.
SHARED = Path(os.environ.get("SEARCHCORE_SHARED") or ROOT.parent / "shared")
SHARED_CATALOG_REL = Path("data/fashion-224/metadata.csv")
SHARED_WEIGHTS_REL = Path("weights/realesrgan")
# The shared catalog's own headers, mapped onto searchcore's canonical columns.
SHARED_COLUMN_MAP = (
    ("title", "productDisplayName"),
    ("category", "subCategory"),
    ("colour", "baseColour"),
)
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` from anywhere finds searchcore
    sys.path.insert(0, str(ROOT))


def launched_app(*args: Any, **kwargs: Any) -> Any:
    """The tests' launcher of ``app.py`` (tests/harness.py): one for tests and benchmarks."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from harness import launched_app as launch

    return launch(*args, **kwargs)


# --------------------------------------------------------------------------- arguments


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for JSON, markdown and plots")
    p.add_argument("--work", type=Path, default=WORK, help="scratch folder (catalogs, indexes)")
    p.add_argument("--shared", type=Path, default=SHARED, help="the shared material folder")
    p.add_argument("--tag", default="", help="suffix for the result files (keeps runs apart)")
    return p


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="embedder spec")


def upscaler_args(p: argparse.ArgumentParser) -> None:
    from searchcore.config import Settings

    p.add_argument(
        "--upscaler", default=Settings().upscaler, help="upscaler name (default: the project's)"
    )
    p.add_argument(
        "--upscaler-weights",
        type=Path,
        default=None,
        help="weights file (default: ../shared's copy when present, else the cache)",
    )


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# --------------------------------------------------------------------------- shared material


def shared_catalog(shared: Path) -> tuple[Path | None, str]:
    """The real product catalog in ../shared, or None and why not."""
    path = shared / SHARED_CATALOG_REL
    if path.is_file():
        return path, ""
    return None, f"{path} is absent (no ../shared on this machine)"


def load_shared_catalog(shared: Path) -> Any:
    """The shared catalog loaded with its column map, or None after saying why it is absent."""
    from searchcore.catalog import load_catalog

    csv, why = shared_catalog(shared)
    if csv is None:
        print(f"needs the shared catalog: {why}", file=sys.stderr)
        return None
    return load_catalog(csv, SHARED_COLUMN_MAP)


def upscaler_weights(shared: Path, name: str, given: Path | None) -> tuple[Path | None, str]:
    """Weights for upscaler ``name``: the flag, else ../shared's copy, else None (the cache)."""
    if given is not None:
        return given, f"--upscaler-weights {given}"
    candidate = shared / SHARED_WEIGHTS_REL / f"{name}.pth"
    if candidate.is_file():
        return candidate, f"shared copy {candidate}"
    return None, "searchcore's weights cache (no shared copy)"


def demo_catalog(work: Path, n: int = 1200) -> Path:
    """The synthetic demo shop (what the app serves), generated once into the work folder."""
    folder = work / f"demo-{n}"
    csv = folder / "products.csv"
    if not csv.is_file():
        from searchcore.demo.synth import generate_catalog

        print(f"generating the demo shop ({n} products) into {folder} ...", flush=True)
        generate_catalog(folder, n=n)
    return csv


def catalog_embeddings(
    work: Path, csv: Path, column_map: tuple[tuple[str, str], ...], model: str, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of a catalog's photos by the real build (``build_index``), cached per model
    and catalog; returns ``(vectors, rows)`` with ``rows`` the catalog rows (labels)."""
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.config import Settings
    from searchcore.service import make_embedder
    from searchcore.stores.hnsw import HnswIndex

    catalog = load_catalog(csv, column_map)
    embedder = make_embedder(Settings(model=model))
    key = f"{name}-{embedder.fingerprint[:12]}-{catalog.sha256[:12]}"
    cache = work / f"embeddings-{key}.npz"
    if not cache.is_file():
        folder = work / f"embeddings-index-{key}"
        print(f"embedding {len(catalog)} photos of {csv} (cached for later runs) ...", flush=True)
        report = build_index(catalog, embedder, folder, progress=sys.stderr.isatty())
        print(report.summary().splitlines()[0], flush=True)
        index, _ = HnswIndex.load(folder)
        rows = index.live_labels()
        work.mkdir(parents=True, exist_ok=True)
        np.savez(cache, vectors=index.get_vectors(rows), rows=rows)
    data = np.load(cache)
    return data["vectors"].astype(np.float32), data["rows"]


# --------------------------------------------------------------------------- machine


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction sets CPU inference speed turns on: int8 kernels run on AVX-512 VNNI or AMX
# several times faster than on AVX2 alone, bf16 on AVX-512 BF16 or AMX.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has (empty where /proc/cpuinfo cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    return []


def _versions(names: Iterable[str]) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": run("rev-parse", "--short", "HEAD"),
        "dirty": bool(run("status", "--porcelain", "--untracked-files=no")),
    }


def machine_info() -> dict[str, Any]:
    """The machine as it is now; call again at the end for the closing load average."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15min": load_average(),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["memory_available_gib"] = round(psutil.virtual_memory().available / 2**30, 1)
    except ImportError:
        pass
    if "torch" in sys.modules:  # only report torch when the script uses it
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    info["env"] = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "SEARCHCORE_THREADS")
        if k in os.environ
    }
    info["versions"] = _versions(
        (
            "torch",
            "open_clip_torch",
            "numpy",
            "pillow",
            "hnswlib",
            "faiss-cpu",
            "pymilvus",
            "milvus-lite",
            "gradio",
            "searchcore",
        )
    )
    info["git"] = git_state()
    return info


def busy_warning(start: list[float], end: list[float], cpus: int | None) -> str:
    """A one-line warning when the 1-minute load average says others used the CPUs too."""
    loads = [x[0] for x in (start, end) if x]
    if not loads or not cpus:
        return ""
    worst = max(loads)
    if worst > 0.5 * cpus:
        return (
            f"machine busy: 1-min load average {worst:.1f} on {cpus} CPUs at start/end; "
            "figures are pessimistic, re-run on an idle machine"
        )
    return ""


# --------------------------------------------------------------------------- statistics


def percentiles(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """p50, p95, mean, min, max and n of a list of milliseconds (or any numbers)."""
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), digits),
        "p95": round(float(np.percentile(a, 95)), digits),
        "p99": round(float(np.percentile(a, 99)), digits),
        "mean": round(float(a.mean()), digits),
        "min": round(float(a.min()), digits),
        "max": round(float(a.max()), digits),
    }


def fmt(x: Any, digits: int = 3) -> str:
    """Numbers for tables: 3 significant digits, thousands apart; '-' for missing."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if x == 0:
            return "0"
        if abs(x) >= 10**digits:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None or not np.isfinite(value):
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "NOT met"


# --------------------------------------------------------------------------- a run


@dataclass
class Run:
    """One benchmark run: machine details in, results and markdown out."""

    name: str
    args: argparse.Namespace
    started: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=machine_info)
    sections: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, flush=True)

    def skip(self, what: str, why: str) -> None:
        """A part that could not run: printed now, listed in the results."""
        line = f"skipped {what}: {why}"
        self.skipped.append(line)
        self.say(line)

    def section(self, title: str, body: str) -> None:
        text = f"## {title}\n\n{body}\n"
        self.sections.append(text)
        self.say("\n" + text)

    @property
    def stem(self) -> str:
        return self.name + (f"-{self.args.tag}" if self.args.tag else "")

    def plot_path(self, what: str) -> Path:
        self.args.out.mkdir(parents=True, exist_ok=True)
        return self.args.out / f"{self.stem}-{what}.png"

    def finish(self, results: dict[str, Any], command: str) -> Path:
        """Write ``<name>.json`` and ``<name>.md``; returns the JSON path."""
        end = machine_info()
        self.machine["torch_threads"] = end.get("torch_threads", self.machine.get("torch_threads"))
        self.machine["load_average_end"] = end["load_average_1_5_15min"]
        warning = busy_warning(
            self.machine["load_average_1_5_15min"],
            end["load_average_1_5_15min"],
            self.machine["logical_cpus"],
        )
        seconds = round(time.time() - self.started, 1)
        args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()}
        payload = {
            "benchmark": self.name,
            "command": command,
            "args": args,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": seconds,
            "machine": self.machine,
            "warning": warning,
            "skipped": self.skipped,
            "results": results,
        }
        self.args.out.mkdir(parents=True, exist_ok=True)
        json_path = self.args.out / f"{self.stem}.json"
        json_path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
        m = self.machine
        head = [
            f"# {self.name}",
            "",
            (
                f"`{command}` — {payload['started_utc']}, {seconds} s, commit "
                f"{m['git']['commit'] or '?'}{' (dirty)' if m['git']['dirty'] else ''}"
            ),
            "",
            (
                f"Machine: {m['cpu']} ({' '.join(m.get('cpu_flags') or ['flags unknown'])}), "
                f"{m['logical_cpus']} CPUs, torch threads "
                f"{m.get('torch_threads', '-')}, load average "
                f"{m['load_average_1_5_15min']} at start, {m['load_average_end']} at end."
            ),
        ]
        if warning:
            head += ["", f"**Warning: {warning}.**"]
        if self.skipped:
            head += ["", *[f"- {s}" for s in self.skipped]]
        (self.args.out / f"{self.stem}.md").write_text(
            "\n".join(head) + "\n\n" + "\n".join(self.sections)
        )
        self.say(
            f"\nwrote {json_path} and {json_path.with_suffix('.md')}"
            + (f"\n{warning}" if warning else "")
        )
        return json_path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)
