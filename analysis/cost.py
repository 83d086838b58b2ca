"""What a training job costs on a GPU: measured images/s where a GPU has measured it, else an estimate.

Two sources, and every figure says which it came from:

- **measured**: a row of ``benchmarks/throughput.yaml``, written by ``benchmarks/bench_throughput.py``
  (``benchmarks/gpu_check.sh`` runs it on a GPU for the paper's models): images/s of a SAM step and of
  an SGD step for one model, image size, precision, batch and m, with the GPU, date, commit and command.
- **estimate** (no row yet): a per-kernel roofline. The model's forward pass on one chunk of m examples
  is traced on the meta device (no memory, no data); each operator costs
  ``max(FLOPs / peak FLOP/s, bytes / bandwidth, launch overhead)``, with bytes = its input and output
  tensors (activations and weights) at the precision's element size; the backward pass costs 2x the
  forward (``BACKWARD_FACTOR``); SAM runs two forward+backward passes per chunk; the optimizer reads
  and writes the parameters once more per step. The sum is divided by an efficiency factor. Summing
  per kernel, not taking one max over the step, is what eager PyTorch does: a convolution is bound by
  FLOPs, the BatchNorm and ReLU after it by memory traffic, and they run one after another. This is
  why ResNet-32 (small convolutions, many memory-bound kernels, chunks of 16) costs tens of times what
  its FLOPs alone imply.

Data loading, evaluation and checkpoints are not counted in either.
"""

from __future__ import annotations

import datetime as _dt
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT_FILE = ROOT / "benchmarks" / "throughput.yaml"


@dataclass(frozen=True)
class DatasetSize:
    train_images: int
    side: int  # native image side; a config's dataset.image_size replaces it
    chans: int
    classes: int


# Training images (the official splits), native side, channels, classes: no dataset files needed.
DATASETS = {
    "cifar10": DatasetSize(50_000, 32, 3, 10),
    "cifar100": DatasetSize(50_000, 32, 3, 100),
    "svhn": DatasetSize(604_388, 32, 3, 10),  # train + extra
    "fashion_mnist": DatasetSize(60_000, 28, 1, 10),
    "imagenet": DatasetSize(1_281_167, 224, 3, 1000),
    "digits": DatasetSize(1_437, 8, 1, 10),  # 80% of 1,797
    # Table 3's finetuning sets (train / train+val as the configs load them; side: the 224 default)
    # Birdsnap: Kornblith et al. (2019)'s split; yours is as you assemble it
    "birdsnap": DatasetSize(47_386, 224, 3, 500),
    "fgvc_aircraft": DatasetSize(6_667, 224, 3, 100),  # trainval
    "flowers102": DatasetSize(2_040, 224, 3, 102),  # train + val
    "food101": DatasetSize(75_750, 224, 3, 101),
    "oxford_pets": DatasetSize(3_680, 224, 3, 37),  # trainval
    "stanford_cars": DatasetSize(8_144, 224, 3, 196),
}


@dataclass(frozen=True)
class Hardware:
    """The GPU the estimate assumes: dense peak FLOP/s per precision, memory bandwidth, efficiency."""

    name: str
    peak_flops: dict[str, float]
    bandwidth: float  # bytes/s
    efficiency: float = 0.4  # fraction of peak (both FLOPs and bandwidth) eager PyTorch reaches
    launch_s: float = 10e-6  # per kernel: eager PyTorch's dispatch + launch, the floor of a tiny kernel

    def describe(self, precision: str) -> str:
        return (
            f"per-kernel roofline at {self.name} {precision} peak ({self.peak_flops[precision] / 1e12:g} TFLOP/s, "
            f"{self.bandwidth / 1e12:g} TB/s) x {self.efficiency:g} efficiency, "
            f"{self.launch_s * 1e6:g} us per kernel; not measured"
        )


# NVIDIA A100 80GB SXM datasheet: 312 TFLOP/s dense bf16/fp16 tensor cores, 19.5 fp32 (156 with TF32,
# which PyTorch leaves off for matmuls by default), 2.04 TB/s HBM2e.
A100 = Hardware("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}, 2.0e12)
BACKWARD_FACTOR = 2.0  # backward = 2x forward in FLOPs, bytes and kernels (input and weight gradients)
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# fp32 parameter-sized reads + writes per step: w, g, momentum read; w, momentum written
OPTIMIZER_PARAM_PASSES = 5
SAM_CHUNK_PARAM_PASSES = 6  # per chunk of m, SAM's own: gradient norm, save w, add e(w), restore w
SAM_CHUNK_KERNELS = 10  # per chunk, its foreach kernels (norm, scale, add, copy)


@dataclass
class Trace:
    """One forward pass at a given batch, per operator: FLOPs, bytes moved (fp32), and the count."""

    batch: int
    params: int
    ops: list[tuple[float, float]] = field(default_factory=list)  # (flops, fp32 bytes) per kernel

    @property
    def flops(self) -> float:
        return sum(f for f, _ in self.ops)

    @property
    def bytes(self) -> float:
        return sum(b for _, b in self.ops)


def _nbytes(tree: Any) -> int:
    leaves, _ = tree_flatten(tree)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[float, float]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func._overloadpacket in (torch.ops.aten.detach, torch.ops.aten.empty):
            return out  # no kernel, no traffic
        packet = func._overloadpacket
        flops = float(flop_registry[packet](*args, **kwargs, out_val=out)) if packet in flop_registry else 0.0
        self.ops.append((flops, float(_nbytes((args, kwargs)) + _nbytes(out))))
        return out


def model_kwargs(model_cfg: dict) -> dict:
    """The model config's architecture keys (no weights to load: the estimate needs only shapes)."""
    drop = ("name", "pretrained", "pretrained_file", "reset_head", "freeze_bn_stats")
    return {k: v for k, v in model_cfg.items() if k not in drop}


def trace_forward(model_cfg: dict, classes: int, chans: int, side: int, batch: int) -> Trace:
    """Every kernel of the model's training-mode forward pass on ``batch`` images, on the meta device."""
    key = (tuple(sorted((k, str(v)) for k, v in model_cfg.items())), classes, chans, side, batch)
    if key not in _TRACES:
        _TRACES[key] = _trace_forward(model_cfg, classes, chans, side, batch)
    return _TRACES[key]


_TRACES: dict[tuple, Trace] = {}


def _trace_forward(model_cfg: dict, classes: int, chans: int, side: int, batch: int) -> Trace:
    from models import create_model

    with torch.device("meta"):
        model = create_model(model_cfg["name"], classes, in_chans=chans, **model_kwargs(model_cfg))
        x = torch.empty(batch, chans, side, side)
        recorder = _OpRecorder()
        with recorder:
            model(x)
    return Trace(batch, sum(p.numel() for p in model.parameters()), recorder.ops)


@dataclass(frozen=True)
class Job:
    """What the cost of one training run depends on."""

    model: str  # the config's model.name
    model_cfg: tuple  # sorted items of the model config (hashable)
    dataset: str
    side: int
    chans: int
    classes: int
    train_images: int  # per epoch, after train_repeats and the validation split
    epochs: int
    batch_size: int
    m: int | None
    sam: bool
    precision: str


def job_from_config(cfg: Any, precision: str | None = None) -> Job:
    """A Job from a composed train.yaml config (no dataset files read)."""
    ds = cfg.dataset
    if ds.name not in DATASETS:
        raise ValueError(f"no size known for dataset {ds.name!r}: add it to analysis.cost.DATASETS")
    size = DATASETS[ds.name]
    side = int(ds.get("image_size") or size.side)
    images = (
        size.train_images * (1 - float(ds.get("val_fraction") or 0.0)) * int(ds.get("train_repeats") or 1)
    )
    classes = len(ds.classes) if ds.get("classes") else size.classes
    prec = precision or str(cfg.precision)
    if prec == "auto":
        prec = "bf16"  # train.py's auto on a GPU with bf16 (A100, H100)
    model_cfg = {k: v for k, v in dict(cfg.model).items()}
    return Job(
        model=str(cfg.model.name),
        model_cfg=tuple(
            sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in model_cfg.items())
        ),
        dataset=str(ds.name),
        side=side,
        chans=size.chans,
        classes=classes,
        train_images=int(images),
        epochs=int(cfg.epochs),
        batch_size=int(cfg.batch_size),
        m=int(cfg.m) if cfg.get("m") is not None else None,
        sam=cfg.optimizer.name != "sgd" and float(cfg.rho) != 0,
        precision=prec,
    )


def chunk_size(batch: int, m: int | None) -> int:
    return m if m is not None and 0 < m < batch else batch


def estimate_images_per_s(job: Job, hw: Hardware = A100, trace: Trace | None = None) -> float:
    """Roofline estimate of a training step's images/s (see the module docstring)."""
    chunk = chunk_size(job.batch_size, job.m)
    if trace is None:
        trace = trace_forward(dict(job.model_cfg), job.classes, job.chans, job.side, chunk)
    # traced in fp32; activations and cast weights move at the precision's element size
    scale = BYTES[job.precision] / 4
    peak, bw = hw.peak_flops[job.precision] * hw.efficiency, hw.bandwidth * hw.efficiency
    forward_s = sum(max(f / peak, b * scale / bw, hw.launch_s) for f, b in trace.ops)
    passes = 2 if job.sam else 1
    step_s = passes * (job.batch_size / chunk) * forward_s * (1 + BACKWARD_FACTOR)
    step_s += OPTIMIZER_PARAM_PASSES * 4 * trace.params / bw
    if job.sam:
        step_s += (job.batch_size / chunk) * (
            SAM_CHUNK_PARAM_PASSES * 4 * trace.params / bw + SAM_CHUNK_KERNELS * hw.launch_s
        )
    return job.batch_size / step_s


def flops_only_images_per_s(job: Job, hw: Hardware = A100, trace: Trace | None = None) -> float:
    """What FLOPs alone would give at the same peak and efficiency (for comparison)."""
    chunk = chunk_size(job.batch_size, job.m)
    if trace is None:
        trace = trace_forward(dict(job.model_cfg), job.classes, job.chans, job.side, chunk)
    per_image = trace.flops / trace.batch * (1 + BACKWARD_FACTOR) * (2 if job.sam else 1)
    return hw.peak_flops[job.precision] * hw.efficiency / per_image


# --- the measured table ---------------------------------------------------------------------------

ROW_KEYS = ("model", "image_size", "precision", "batch_size", "m", "gpu")


def load_rows(path: Path = THROUGHPUT_FILE) -> list[dict]:
    if not Path(path).exists():
        return []
    data = yaml.safe_load(Path(path).read_text()) or {}
    return list(data.get("rows") or [])


def merge_row(row: dict, path: Path = THROUGHPUT_FILE) -> None:
    """Add ``row`` to the file, replacing a row with the same model, size, precision, batch, m and GPU."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    rows = [r for r in load_rows(path) if any(r.get(k) != row.get(k) for k in ROW_KEYS)]
    rows.append(row)
    rows.sort(key=lambda r: (str(r["model"]), int(r["image_size"]), str(r["precision"]), str(r.get("date"))))
    path.write_text(header + yaml.safe_dump({"rows": rows}, sort_keys=False, width=200))


def find_row(job: Job, rows: list[dict]) -> dict | None:
    """The measured row for this job's model, image size and precision (same batch and m preferred,
    then the latest)."""
    match = [
        r
        for r in rows
        if r.get("model") == job.model
        and int(r.get("image_size", -1)) == job.side
        and r.get("precision") == job.precision
    ]
    if not match:
        return None
    same = [r for r in match if r.get("batch_size") == job.batch_size and r.get("m") == job.m]
    return max(same or match, key=lambda r: str(r.get("date")))


@dataclass(frozen=True)
class Throughput:
    images_per_s: float
    source: str  # "measured: ..." or "estimate: ..."
    measured: bool
    flops_only_images_per_s: float | None = None


def throughput(job: Job, rows: list[dict], hw: Hardware = A100) -> Throughput:
    row = find_row(job, rows)
    if row is not None:
        key = "sam_images_per_s" if job.sam else "sgd_images_per_s"
        where = (
            f"measured: {row['gpu']}, {row.get('date')}, commit {row.get('commit')}, batch {row.get('batch_size')} "
            f"m {row.get('m')}, `{row.get('command')}`"
        )
        return Throughput(float(row[key]), where, True)
    trace = trace_forward(
        dict(job.model_cfg), job.classes, job.chans, job.side, chunk_size(job.batch_size, job.m)
    )
    return Throughput(
        estimate_images_per_s(job, hw, trace), "estimate: " + hw.describe(job.precision), False,
        flops_only_images_per_s(job, hw, trace),
    )  # fmt: skip


def gpu_hours(job: Job, images_per_s: float) -> float:
    return job.epochs * job.train_images / images_per_s / 3600


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).date().isoformat()


def fmt_hours(h: float) -> str:
    if h < 10:
        return f"{h:.3g}"
    return f"{h:,.1f}" if h < 100 else f"{math.floor(h + 0.5):,}"
