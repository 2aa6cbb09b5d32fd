"""The main job on the embedded default: train ViT, ReViT and ViT+CB on Fashion-MNIST, then
measure and draw their attention, robustness and attributions, with a one-page report.

Stages (each reuses what a previous run finished, unless ``fresh``):

    1. train      vit / revit / vit_cb micro_patch4_32 on Fashion-MNIST    runs/<model>/
    2. attention  globality and entropy on the test images                globality/, entropy/
    3. robustness horizontal shifts and scales                            robustness/
    4. gradcam    GradCAM and attention rollout on a few test images       gradcam/
    5. report     report.md: every figure, a caption each, headline numbers
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pandas as pd

DEMO_MODELS = ("vit_micro_patch4_32", "revit_micro_patch4_32", "vit_cb_micro_patch4_32")
LABELS = {"vit_micro_patch4_32": "ViT", "revit_micro_patch4_32": "ReViT", "vit_cb_micro_patch4_32": "ViT+CB"}
Log = Callable[[str], None]


@dataclass
class DemoConfig:
    """What the demo runs; the defaults fit in about 20 minutes on 2 CPU cores."""

    epochs: int = 2
    subset: Optional[int] = 20000        # training images per epoch (Fashion-MNIST has 60000)
    batch_size: int = 64                 # more updates at the same images per second (README, training)
    lr: float = 2e-3
    seed: int = 0
    analysis_images: int = 512
    robustness_images: int = 512
    gradcam_images: int = 6
    data_dir: Optional[str] = None
    device: str = "auto"
    models: List[str] = field(default_factory=lambda: list(DEMO_MODELS))


STAMP = ".attnlab-stage.json"  # the demo settings a finished stage was made with


def _done(folder: Path, config: Dict) -> bool:
    stamp = folder / STAMP
    return stamp.exists() and json.loads(stamp.read_text()) == config


def _mark(folder: Path, config: Dict) -> None:
    (folder / STAMP).write_text(json.dumps(config, sort_keys=True))


def train_stage(cfg: DemoConfig, out: Path, log: Log) -> Dict[str, Path]:
    """Train each model (or reuse / resume its run); returns label -> best checkpoint."""
    from .train import TrainConfig, train
    from .train.state import STATE_INFO_FILE

    ckpts = {}
    for name in cfg.models:
        run = out / "runs" / name
        # a budget of a few epochs: no augmentation, no label smoothing, no drop-path (they pay off
        # only in longer runs), short warm-up
        tc = TrainConfig(model=name, dataset="fashion-mnist", data_dir=cfg.data_dir, epochs=cfg.epochs,
                         subset=cfg.subset, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                         warmup_epochs=0.2, augment=False, label_smoothing=0.0, drop_path=0.0,
                         device=cfg.device, out=str(run), progress="off")
        info = run / STATE_INFO_FILE
        finished = info.exists() and json.loads(info.read_text()).get("finished")
        if finished and (run / "best.pt").exists():
            log(f"  {name}: reusing the finished run in {run}")
        else:
            resume = info.exists()
            log(f"  {name}: {'resuming' if resume else 'training'} ({cfg.epochs} epochs of "
                f"{cfg.subset or 60000} images) into {run}")
            train(tc, resume=resume, log=lambda msg: None)
        ckpts[LABELS.get(name, name)] = run / "best.pt"
    return ckpts


def run_demo(out: Path, cfg: Optional[DemoConfig] = None, fresh: bool = False, log: Log = print) -> Path:
    """Run every stage into ``out``; returns the report's path."""
    from .explore import explore
    from .studies.attention import (ENTROPY_METRICS, GLOBALITY_METRICS, EntropyResult, GlobalityResult,
                                    measure_attention)
    from .studies.attribution import explain
    from .studies.robustness import measure_robustness

    cfg = cfg or DemoConfig()
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    key = asdict(cfg)
    t0 = time.time()

    log("[1/6] training on Fashion-MNIST")
    ckpts = train_stage(cfg, out, log)
    labels, paths = list(ckpts), [str(p) for p in ckpts.values()]
    data = dict(dataset="fashion-mnist", data_dir=cfg.data_dir)

    log("[2/6] attention: globality and entropy")
    if not (_done(out / "globality", key) and _done(out / "entropy", key)):
        attention = measure_attention(paths, labels, num_images=cfg.analysis_images, device=cfg.device,
                                      metrics=GLOBALITY_METRICS + ENTROPY_METRICS, **data)
        GlobalityResult(attention.frame, layouts=attention.layouts).save(out / "globality")
        EntropyResult(attention.frame, layouts=attention.layouts).save(out / "entropy")
        _mark(out / "globality", key)
        _mark(out / "entropy", key)
    else:
        log("  reusing finished results")

    log("[3/6] robustness: horizontal shifts and scales")
    if not _done(out / "robustness", key):
        robustness = measure_robustness(paths, labels, num_images=cfg.robustness_images, shifts=[0, 2, 4, 8],
                                        scales=[0.75, 1.0, 1.25], device=cfg.device, seed=cfg.seed, **data)
        robustness.save(out / "robustness")
        _mark(out / "robustness", key)
    else:
        log("  reusing finished results")

    log("[4/6] GradCAM and attention rollout")
    if not _done(out / "gradcam", key):
        explained = explain(paths, labels, num_images=cfg.gradcam_images, methods=["gradcam"], device=cfg.device,
                            **data)
        explained.save(out / "gradcam")
        _mark(out / "gradcam", key)
    else:
        log("  reusing finished results")

    log("[5/6] explorer: explore.html")
    if not _done(out / "explore", key):
        explore(paths, labels, num_images=cfg.gradcam_images, device=cfg.device, **data).save(out / "explore")
        _mark(out / "explore", key)
    else:
        log("  reusing finished results")

    log("[6/6] report")
    report = write_demo_report(out, ckpts)
    log(f"done in {time.time() - t0:.0f} s: {report}")
    return report


def _accuracy_table(ckpts: Dict[str, Path], out: Path) -> pd.DataFrame:
    from .checkpoint import read_checkpoint

    rows = []
    rob = pd.read_csv(out / "robustness" / "robustness.csv")
    glob = pd.read_csv(out / "globality" / "globality.csv")
    ent = pd.read_csv(out / "entropy" / "entropy.csv")
    for label, path in ckpts.items():
        spec = read_checkpoint(path).spec
        metrics = spec.provenance.get("metrics", {})
        r = rob[(rob["model"] == label) & (rob["metric"] == "consistency") & (rob["transform"] == "shift-h")]
        mad = glob[(glob["model"] == label) & (glob["metric"] == "mad_px") & (glob["head"] == -1)
                   & (glob["attention"] == "applied")]
        en = ent[(ent["model"] == label) & (ent["metric"] == "entropy_norm") & (ent["head"] == -1)
                 & (ent["attention"] == "applied")]
        rows.append({
            "model": label,
            "top-1 (%)": float(metrics.get("top1", float("nan"))),
            "epochs": spec.provenance.get("epochs"),
            "consistency @ 4 px": float(r[r["magnitude"] == 4]["value"].iloc[0]) if len(r) else float("nan"),
            "consistency @ 8 px": float(r[r["magnitude"] == 8]["value"].iloc[0]) if len(r) else float("nan"),
            "MAD last layer (px)": float(mad.sort_values("layer")["value"].iloc[-1]),
            "entropy/log N, mean over layers": float(en["value"].mean()),
        })
    return pd.DataFrame(rows)


def write_demo_report(out: Path, ckpts: Dict[str, Path]) -> Path:
    from .report import Section, write_report

    def png(folder: str, stem: str) -> Path:
        return out / folder / f"{stem}.png"

    sections = [
        Section("Headline numbers", "Top-1 on the Fashion-MNIST test set (best epoch), consistency of the "
                "top-1 under horizontal shifts, mean attention distance of the last layer, and the mean "
                "normalised attention entropy.", table=_accuracy_table(ckpts, out)),
        Section("Globality", figures=[
            (png("globality", "mad_per_layer"), "Mean attention distance per layer (band: range over heads)."),
            (png("globality", "mad_per_head"), "Mean attention distance of every head against its layer."),
            (png("globality", "globality_curves"), "Share of attention beyond radius r, one line per layer."),
        ]),
        Section("Entropy", figures=[
            (png("entropy", "entropy_per_layer"), "Attention entropy per layer, 95% CI over images."),
            (png("entropy", "entropy_heatmap"), "Normalised entropy of every head."),
        ]),
        Section("Robustness", figures=[
            (png("robustness", "robustness_shift-h"), "Accuracy and consistency under horizontal shifts (black fill)."),
            (png("robustness", "robustness_scale"), "Accuracy and consistency under zoom out / zoom in."),
        ]),
        Section("Where the models look", figures=[
            (png("gradcam", "gradcam"), "GradCAM and attention rollout of the three models on the same test images."),
        ]),
        Section("Explore the attention", "Open [explore/explore.html](explore/explore.html) in a browser (one "
                "self-contained file, works offline): hover a patch to see where it looks in ViT, ReViT and "
                "ViT+CB side by side, block by block and head by head, with rollout and GradCAM overlays."),
    ]
    intro = ("ViT, ReViT (residual attention) and ViT+CB (context broadcasting), trained from scratch on "
             "Fashion-MNIST by `attnlab demo`. CSVs sit next to every figure; `runs/` holds the checkpoints "
             "and per-epoch `metrics.csv`.")
    return write_report(out / "report.md", "attnlab demo", intro, sections)
