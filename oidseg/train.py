"""One training stage of a Cascade Mask R-CNN model (SPEC section 5).

A stage = (model config, annotation pickle, ordered list, entries to skip,
iterations, LR factor, augmentation, weights of the previous stage). It runs
mmengine's Runner with an iteration-based loop and:

- LR rule: ``lr = base_lr x lr_factor x images_per_iter / base_images_per_iter``
  (config keys ``base_lr``, ``base_images_per_iter``; full size: 0.005 for
  4 images; demo: 0.02 for 2 images), i.e. the linear scaling rule when the
  batch differs from the reference one. ``images_per_iter = images per GPU x
  processes``.
- warm-up: linear from ``warmup_ratio`` over ``min(warmup_iters, iters)``
  iterations, then constant (config keys).
- stage chaining: ``--load-from PREV.pth`` loads the previous stage's weights
  with a fresh optimiser and a new warm-up (not ``resume``); ``--pretrained``
  loads ImageNet weights into the backbone. Both strictly, weights-only
  (:mod:`oidseg.checkpoints`, :class:`oidseg.train_hooks.LoadWeightsHook`):
  a file that does not fit the model is an error naming keys.
- one job per work dir (:mod:`oidseg.stage_dir`): the trainer locks
  ``--work-dir``; checkpoints of another job (a different fingerprint of
  inputs and arguments) are moved to ``WORK_DIR.stale/`` and the stage
  starts afresh; a truncated newest checkpoint is dropped.
- resume: when ``--work-dir`` holds an intact checkpoint of the same job,
  training resumes from the newest (``resume=True``: weights, optimiser,
  scheduler, iteration counter and random state); the ordered list
  continues at the right entry without reading the skipped batches
  (``OrderedIterBasedTrainLoop``).
- outputs: periodic checkpoints every ``--checkpoint-interval`` iterations in
  ``--work-dir``; the final weights at ``--out`` (atomic; ``state_dict`` and
  ``meta`` with ``dataset_meta.classes`` = the class MIDs, only plain types,
  so ``torch.load(weights_only=True)`` reads it); one JSON object per logged
  iteration (``iter``, ``lr``, ``loss``, each loss term, ``time``) at
  ``--log-jsonl`` (atomic copy of the work-dir log at the end).
- ``--gpus N > 1``: re-executes itself under ``torch.distributed.run``
  (DDP, world size N, ``launcher=pytorch``): NCCL on N visible GPUs, or,
  with no GPU visible (``--dist-backend gloo``/``auto``), N gloo CPU
  processes (:func:`setup_distributed`); rank r reads the list entries
  r, r + N, ...; only rank 0 writes the final checkpoint and log. With
  ``--gpus 1`` it trains in this process (on the CPU when no GPU is visible).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from oidseg.errors import InputError, OutputError, StageError, atomic_path, atomic_write_bytes, is_write_failure

AUGMENTATIONS = ("multiscale", "single", "photometric")
DIST_BACKENDS = ("auto", "nccl", "gloo")
WORK_LOG = "train_log.jsonl"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train one stage of a Cascade Mask R-CNN model.")
    p.add_argument("--config", required=True, help="model config, e.g. configs/demo/L1.py")
    p.add_argument("--ann", required=True, help="annotation pickle (leaf_train.pkl / parent_train.pkl)")
    p.add_argument("--order", required=True, help="ordered training list (.npy of data_list indices)")
    p.add_argument("--skip", type=int, default=0,
                   help="list entries consumed by earlier stages (iterations x images per iteration)")
    p.add_argument("--iters", type=int, required=True, help="iterations of this stage")
    p.add_argument("--lr-factor", type=float, default=1.0, help="LR = base LR x this (1, 1/3, 1/15, ...)")
    p.add_argument("--aug", choices=AUGMENTATIONS, default="multiscale",
                   help="training pipeline: config's train_pipelines[AUG]")
    p.add_argument("--load-from", default="none", help="previous stage's final weights, or 'none'")
    p.add_argument("--pretrained", default="none",
                   help="local ImageNet backbone checkpoint (ignored with --load-from), or 'none'")
    p.add_argument("--work-dir", required=True, help="periodic checkpoints; a rerun resumes from them")
    p.add_argument("--out", required=True, help="final checkpoint (written atomically)")
    p.add_argument("--log-jsonl", required=True, help="JSON-lines training log (written atomically)")
    p.add_argument("--images-per-gpu", type=int, default=None,
                   help="images per GPU (process) per iteration; default: config's images_per_gpu")
    p.add_argument("--gpus", type=int, default=1, help="processes/GPUs; > 1 launches torchrun (DDP)")
    p.add_argument("--dist-backend", choices=DIST_BACKENDS, default="auto",
                   help="process group of --gpus > 1: nccl (GPUs), gloo (CPU processes when no "
                        "GPU is visible); auto: nccl with CUDA, else gloo. Given explicitly, "
                        "also --gpus 1 runs under torchrun (one process)")
    p.add_argument("--amp", action="store_true", help="mixed precision (AmpOptimWrapper)")
    p.add_argument("--checkpoint-interval", type=int, default=None,
                   help="iterations between checkpoints in --work-dir; default: config's")
    p.add_argument("--log-interval", type=int, default=None,
                   help="iterations per JSON-lines entry; default: config's logger interval")
    p.add_argument("--workers", type=int, default=None, help="dataloader workers per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nonfinite-patience", type=int, default=10,
                   help="stop with an error when the loss is NaN/inf this many iterations in a row")
    p.add_argument("--list-source", default=None,
                   help="the list's source file (build_lists.py --out-source): the --ann pickle must be "
                        "the one the list was built from")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--launcher", choices=("none", "pytorch"), default="none", help=argparse.SUPPRESS)
    return p


def _none(value: str | None) -> str | None:
    return None if value is None or value.lower() in ("", "none") else value


def is_weights_name(value: str) -> bool:
    """A model-zoo name or URL (``open-mmlab://resnext101_64x4d``,
    ``torchvision://resnet101``, ``https://...``), not a local file."""
    return "://" in value


def pretrained_init_cfg(name: str) -> dict:
    """The backbone ``init_cfg`` of an ImageNet model-zoo name: mmengine's
    ``Pretrained`` initialiser, which downloads it at run time (rank 0 first,
    into torch hub's cache) and loads it non-strictly as mmdet does (the
    classifier's ``fc`` is ignored). ``torchvision://``/``modelzoo://`` names
    need torchvision in mmengine's loader; without torchvision they map to
    the URL of mmengine's own table (``hub/torchvision_0.12.json``)."""
    checkpoint = name
    for scheme in ("torchvision://", "modelzoo://"):
        if name.startswith(scheme):
            import importlib.util

            if importlib.util.find_spec("torchvision") is None:
                import mmengine

                table = mmengine.load(str(Path(mmengine.__path__[0]) / "hub" / "torchvision_0.12.json"))
                model = name[len(scheme):]
                if model not in table:
                    raise InputError(f"--pretrained {name}: no such torchvision model in "
                                     f"mmengine's table ({', '.join(sorted(table)[:8])}, ...)")
                checkpoint = table[model]
    return dict(type="Pretrained", checkpoint=checkpoint)


def check_args(args: argparse.Namespace) -> None:
    for name in ("config", "ann", "order"):
        if not Path(getattr(args, name)).is_file():
            raise InputError(f"{getattr(args, name)}: --{name} file is missing")
    for name in ("load_from", "pretrained"):
        value = _none(getattr(args, name))
        if value is not None and not Path(value).is_file() and not (
                name == "pretrained" and is_weights_name(value)):
            raise InputError(f"{value}: --{name.replace('_', '-')} checkpoint is missing")
    if args.iters < 1:
        raise InputError(f"--iters must be >= 1, got {args.iters}")
    if args.skip < 0:
        raise InputError(f"--skip must be >= 0, got {args.skip}")
    if args.lr_factor <= 0:
        raise InputError(f"--lr-factor must be > 0, got {args.lr_factor}")
    if args.gpus < 1:
        raise InputError(f"--gpus must be >= 1, got {args.gpus}")
    if args.nonfinite_patience < 1:
        raise InputError(f"--nonfinite-patience must be >= 1, got {args.nonfinite_patience}")
    if args.list_source:
        from oidseg.rebalance import check_list_source

        check_list_source(args.list_source, args.order, args.ann)


def stage_lr(cfg, lr_factor: float, images_per_iter: int) -> float:
    """base_lr x lr_factor, scaled linearly to the images per iteration."""
    return float(cfg.base_lr) * lr_factor * images_per_iter / float(cfg.base_images_per_iter)


def build_config(args: argparse.Namespace, world_size: int):
    """The mmengine Config of this stage (no side effects on disk)."""
    from mmengine.config import Config

    from oidseg.mmdet_ext.dataset import read_classes
    from oidseg.mmdet_ext.model_cfg import set_num_classes

    cfg = Config.fromfile(args.config)
    classes = read_classes(args.ann)
    set_num_classes(cfg.model, len(classes))

    if args.aug not in cfg.get("train_pipelines", {}):
        raise InputError(f"{args.config}: no train_pipelines['{args.aug}']")
    images_per_gpu = args.images_per_gpu or int(cfg.images_per_gpu)
    loader = cfg.train_dataloader
    loader.batch_size = images_per_gpu
    if args.workers is not None:
        loader.num_workers = args.workers
    if loader.num_workers == 0:
        loader.persistent_workers = False
    loader.sampler = dict(type="OrderedListSampler", order_file=str(args.order), skip=args.skip)
    loader.dataset.ann_file = str(args.ann)
    loader.dataset.metainfo = dict(classes=tuple(classes))
    loader.dataset.pipeline = cfg.train_pipelines[args.aug]

    lr = stage_lr(cfg, args.lr_factor, images_per_gpu * world_size)
    cfg.optim_wrapper.optimizer.lr = lr
    if args.amp:
        import torch

        if not torch.cuda.is_available():
            raise InputError("--amp needs a CUDA GPU and none is visible")
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.loss_scale = "dynamic"
    warmup = min(int(cfg.warmup_iters), args.iters)
    cfg.param_scheduler = [
        dict(type="LinearLR", start_factor=float(cfg.warmup_ratio), by_epoch=False,
             begin=0, end=warmup)] if warmup > 0 else None

    cfg.train_cfg.max_iters = args.iters
    interval = args.checkpoint_interval or int(cfg.checkpoint_interval)
    cfg.default_hooks.checkpoint.interval = interval
    cfg.default_hooks.checkpoint.by_epoch = False
    log_interval = args.log_interval or int(cfg.default_hooks.logger.interval)
    cfg.default_hooks.logger.interval = log_interval
    cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [
        dict(type="JsonLinesLossHook", out_file=str(Path(args.work_dir) / WORK_LOG),
             interval=log_interval)]

    cfg.work_dir = str(args.work_dir)
    # --load-from / --pretrained are loaded strictly by LoadWeightsHook (train_stage),
    # not by mmengine's load_from / Pretrained init (a warning and random weights on a misfit)
    cfg.load_from = None
    pretrained = _none(args.pretrained)
    if pretrained and is_weights_name(pretrained) and not _none(args.load_from):
        # a model-zoo name: mmengine's own loader, downloaded on the user's machine
        cfg.model.backbone.init_cfg = pretrained_init_cfg(pretrained)
    cfg.resume = False
    cfg.randomness = dict(seed=args.seed)
    cfg.launcher = args.launcher
    cfg.stage_info = dict(lr=lr, images_per_iter=images_per_gpu * world_size, classes=classes,
                          warmup_iters=warmup, checkpoint_interval=interval)
    return cfg


# --------------------------------------------------------------------------
# JSON-lines log hook

def _log_lines(path: Path) -> list[str]:
    """Complete JSON lines of a work-dir log (a killed run may leave a torn last line)."""
    if not path.exists():
        return []
    good = []
    for line in path.read_text().splitlines():
        try:
            if "iter" in json.loads(line):
                good.append(line)
        except json.JSONDecodeError:
            continue
    return good


def strict_json_line(entry: dict) -> str:
    """One JSON line; a NaN/inf value (not JSON) becomes null and is named
    in ``"nonfinite"``."""
    bad = [k for k, v in entry.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        entry = {k: (None if k in bad else v) for k, v in entry.items()}
        entry["nonfinite"] = bad
    return json.dumps(entry, allow_nan=False)


def _register_hook():
    from mmdet.registry import HOOKS
    from mmengine.hooks import Hook

    if "JsonLinesLossHook" in HOOKS.module_dict:
        return HOOKS.module_dict["JsonLinesLossHook"]

    @HOOKS.register_module()
    class JsonLinesLossHook(Hook):
        """Append ``{"iter", "lr", "loss", <terms>, "time"}`` every ``interval``
        iterations (means over the interval) to ``out_file`` (rank 0)."""

        priority = "BELOW_NORMAL"

        def __init__(self, out_file: str, interval: int = 20) -> None:
            self.out_file, self.interval = out_file, max(1, int(interval))
            self._sums: dict[str, float] = {}
            self._count = 0
            self._t0 = time.perf_counter()

        def before_train(self, runner) -> None:
            if runner.rank != 0:
                return
            # a resumed run drops the entries logged after its checkpoint
            keep_upto = runner.iter
            path = Path(self.out_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = [line for line in _log_lines(path) if json.loads(line)["iter"] <= keep_upto]
            path.write_text("".join(line + "\n" for line in kept))
            self._t0 = time.perf_counter()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if runner.rank != 0 or not outputs:
                return
            for key, value in outputs.items():
                value = value.detach() if hasattr(value, "detach") else value
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._count += 1
            it = runner.iter + 1
            if it % self.interval and it != runner.max_iters:
                return
            lr = runner.optim_wrapper.get_lr()["lr"][0]
            now = time.perf_counter()
            entry = {"iter": it, "lr": float(lr)}
            entry.update({key: total / self._count for key, total in self._sums.items()})
            entry["time"] = (now - self._t0) / self._count
            with open(self.out_file, "a") as fh:
                fh.write(strict_json_line(entry) + "\n")
            self._sums, self._count, self._t0 = {}, 0, now

    return JsonLinesLossHook


# --------------------------------------------------------------------------
# Running

def latest_checkpoint(work_dir: str | Path) -> str | None:
    """The checkpoint named in mmengine's ``work_dir/last_checkpoint``."""
    marker = Path(work_dir) / "last_checkpoint"
    if not marker.is_file():
        return None
    path = marker.read_text().strip()
    return path if path and Path(path).is_file() else None


def starting_weights(args: argparse.Namespace):
    """The :class:`~oidseg.train_hooks.LoadWeightsHook` of a new stage:
    ``--load-from`` (the whole model) or else ``--pretrained`` (the
    backbone), or None. The file is read here, weights-only, so that a bad
    file fails before the Runner is built; its keys are checked when the
    hook loads it into the model."""
    from oidseg.checkpoints import backbone_part, load_checkpoint, state_dict_of
    from oidseg.train_hooks import LoadWeightsHook

    load_from, pretrained = _none(args.load_from), _none(args.pretrained)
    if load_from:
        kind = "--load-from checkpoint"
        state = state_dict_of(load_checkpoint(load_from, kind=kind), load_from, kind=kind)
        return LoadWeightsHook(state, load_from, what=f"the model of {args.config}")
    if pretrained and not is_weights_name(pretrained):  # a name: backbone init_cfg (build_config)
        kind = "--pretrained checkpoint"
        state = state_dict_of(load_checkpoint(pretrained, kind=kind), pretrained, kind=kind)
        return LoadWeightsHook(backbone_part(state), pretrained, what=f"the model of {args.config}",
                               backbone=True)
    return None


def save_final(runner, out: str | Path, classes: Sequence[str], cfg) -> None:
    """Atomically write the final weights with meta.dataset_meta.classes.

    Serialised in memory first: ``torch.save`` to a path names the archive's
    top folder after the file, and the temporary name would make two
    identical runs differ in bytes."""
    import copy
    import io

    import mmdet
    import torch
    from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu

    from oidseg.checkpoints import nonfinite_tensors

    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise StageError(f"iteration {runner.iter}: the final weights hold NaN/inf in {len(bad)} tensors "
                         f"({', '.join(bad[:3])}, ...): the training diverged; {out} was not written")
    # the job's config, the same whether or not this run resumed
    cfg = copy.deepcopy(cfg)
    cfg.resume, cfg.load_from = False, None
    checkpoint = {
        "meta": {
            "dataset_meta": {"classes": list(classes)},
            "iter": int(runner.iter),
            "mmdet_version": mmdet.__version__,
            "config": cfg.pretty_text,
        },
        "state_dict": weights_to_cpu(get_state_dict(model)),
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(out, buffer.getvalue())


def resolve_dist_backend(requested: str) -> str:
    """``auto`` -> ``nccl`` when CUDA is visible, else ``gloo`` (CPU processes)."""
    import torch

    if requested == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    return requested


def check_distributed(args: argparse.Namespace) -> str:
    """The backend of a ``--gpus N > 1`` run, or an :class:`InputError`
    before anything is launched."""
    import torch

    backend = resolve_dist_backend(args.dist_backend)
    n_cuda = torch.cuda.device_count()
    if backend == "nccl" and n_cuda == 0:
        raise InputError(f"--gpus {args.gpus} --dist-backend nccl needs CUDA GPUs and none is "
                         "visible (--dist-backend gloo trains CPU processes)")
    if 0 < n_cuda < args.gpus:
        raise InputError(f"--gpus {args.gpus} needs {args.gpus} visible CUDA GPUs, found {n_cuda}")
    return backend


def setup_distributed(args: argparse.Namespace, cfg) -> None:
    """Prepare a torchrun worker (``--launcher pytorch``) before the Runner.

    nccl: mmengine's ``init_dist`` (it binds the process to GPU
    ``LOCAL_RANK``). gloo: the process group is initialised here from
    torchrun's environment (mmengine's ``init_dist`` calls
    ``torch.cuda.set_device``, which fails without CUDA; the Runner skips it
    when a group exists); without CUDA the model stays on the CPU and
    ``MMDistributedDataParallel`` gets ``device_ids=None`` (mmengine's
    default passes ``[LOCAL_RANK]``, which DDP refuses for a CPU module).
    """
    if args.launcher != "pytorch":
        return
    import torch
    import torch.distributed as dist

    backend = resolve_dist_backend(args.dist_backend)
    cfg.env_cfg.dist_cfg = dict(backend=backend)
    if backend != "gloo":
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                     broadcast_buffers=False,
                                     find_unused_parameters=bool(cfg.get("find_unused_parameters", False)))
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")  # env:// (RANK, WORLD_SIZE, MASTER_ADDR/PORT)


def relaunch_distributed(argv: Sequence[str], gpus: int, work_dir: str | Path) -> int:
    """Re-execute this script under torchrun with ``gpus`` processes on
    this node (``--standalone``: a free rendezvous port, so that several
    stages may run on one node at once); returns torchrun's exit status
    (non-zero when any rank failed; torchrun then stops the others)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={gpus}", str(script), *argv, "--launcher", "pytorch"]
    print("launching: " + " ".join(cmd), file=sys.stderr, flush=True)
    # torchrun inherits the work dir's lock: an orphaned launcher (its parent
    # killed) still holds it, so a rerun cannot start beside it
    from oidseg.stage_dir import lock_work_dir

    lock = lock_work_dir(work_dir)
    os.set_inheritable(lock, True)
    return subprocess.call(cmd, pass_fds=(lock,))


@contextlib.contextmanager
def work_dir_writes(work_dir: str | Path, when: Callable[[], str] = lambda: ""):
    """A write into the work dir that fails for lack of room (a full disk,
    a quota) becomes an :class:`OutputError` naming the work dir: mmengine
    and ``os.pwrite`` raise it without a file name."""
    try:
        yield
    except OSError as exc:
        if not is_write_failure(exc) or isinstance(exc, OutputError):
            raise
        where = exc.filename or f"{work_dir} (the stage's work dir)"
        raise OutputError(exc.errno, f"{where}: could not be written{when()} ({exc.strerror}); the final "
                                     "checkpoint was not written; after freeing space a rerun resumes from "
                                     "the newest intact checkpoint") from exc


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    banner = f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} train.py (pid {os.getpid()}): {args.out}\n"
    if args.launcher == "none":
        print(banner, end="", file=sys.stderr, flush=True)
    check_args(args)
    if args.launcher == "none":
        # this process holds the work dir for its whole life (lock, job fingerprint,
        # intact checkpoints); the ranks of a distributed run find it prepared
        from oidseg.stage_dir import WORK_LOG_FILE, prepare_work_dir, tee_stderr

        with work_dir_writes(args.work_dir):
            prepare_work_dir(args)
            # the lock is ours: every attempt's log is kept in the work dir
            tee_stderr(Path(args.work_dir) / WORK_LOG_FILE, banner)
    if (args.gpus > 1 or args.dist_backend != "auto") and args.launcher == "none":
        check_distributed(args)
        rc = relaunch_distributed(argv, args.gpus, args.work_dir)
        if rc:
            raise SystemExit(rc)
        return
    with contextlib.redirect_stdout(sys.stderr):
        train_stage(args)


def train_stage(args: argparse.Namespace) -> None:
    import torch

    from oidseg.checkpoints import force_weights_only_load

    force_weights_only_load()  # mmengine's own torch.load (resume) included
    if args.threads:
        torch.set_num_threads(args.threads)
    import oidseg.mmdet_ext  # noqa: F401  (registers our components)
    from mmengine.runner import Runner

    _register_hook()
    world_size = args.gpus if args.launcher == "pytorch" else 1
    cfg = build_config(args, world_size)
    setup_distributed(args, cfg)
    info = cfg.pop("stage_info")
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    resume_from = latest_checkpoint(args.work_dir)
    start_weights = None
    if resume_from:
        from oidseg.stage_dir import checkpoint_iter

        done = checkpoint_iter(resume_from)
        if done is not None and done > args.iters:
            raise InputError(f"{resume_from}: checkpoint of iteration {done} is beyond --iters "
                             f"{args.iters}; delete {args.work_dir} to restart this stage")
        cfg.resume, cfg.load_from = True, resume_from
        start = f"resume from {resume_from}"
    else:
        start_weights = starting_weights(args)
        start = (f"{'backbone ' if start_weights.backbone else ''}weights from {start_weights.path}"
                 if start_weights else
                 f"backbone weights from {cfg.model.backbone.init_cfg['checkpoint']}"
                 if (cfg.model.backbone.get("init_cfg") or {}).get("type") == "Pretrained"
                 else "random initialisation")
    print(f"train: {args.config} iters={args.iters} lr={info['lr']:.6g} "
          f"images/iter={info['images_per_iter']} warmup={info['warmup_iters']} "
          f"classes={len(info['classes'])} aug={args.aug} skip={args.skip} "
          f"device={'cuda' if torch.cuda.is_available() else 'cpu'} {start}",
          file=sys.stderr)
    from oidseg.train_hooks import NonFiniteLossHook, PlainCheckpointHook

    runner = Runner.from_cfg(cfg)
    runner.register_hook(PlainCheckpointHook(info["checkpoint_interval"]))
    runner.register_hook(NonFiniteLossHook(args.nonfinite_patience))
    if start_weights is not None:
        runner.register_hook(start_weights)
    with work_dir_writes(args.work_dir, lambda: f" at iteration {runner.iter + 1}"):
        runner.train()  # mmengine's own writes: periodic checkpoints, logs
    if runner.rank == 0:
        save_final(runner, args.out, info["classes"], cfg)
        with atomic_path(args.log_jsonl) as tmp:
            shutil.copyfile(Path(args.work_dir) / WORK_LOG, tmp)
        print(f"train: wrote {args.out} and {args.log_jsonl}", file=sys.stderr)
