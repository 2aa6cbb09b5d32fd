"""Writing ``explore.html`` against the model passes it needs, as a ratio measured in one run (CPU).

    uv run python benchmarks/bench_explore.py [--images 8] [--model vit_tiny_patch16_224] [--clock wall]

The explorer runs each model once with attention captured (``run_with_cache``, every block)
and once more for GradCAM (forward and backward; models without a patch-grid target layer,
such as Swin and MViTv2, have no GradCAM and the baseline is the capture alone). Baseline =
exactly those passes on the same 8 images at 224 px (random weights,
``attnlab.create_model``); measured = ``explore`` plus ``save`` (image decoding, the shape
probe, capture, GradCAM, metrics, quantisation, PNG and base64 encoding, the HTML, the
write). Target: measured / baseline <= 2x. The ratio against the
capture passes alone is printed too. With Chromium installed (``tests/browser.py``) the time
one hover takes to redraw the page is measured as well (a frame is 16.7 ms).

Times are process CPU time on one thread unless ``--clock wall`` (see timing.py).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timing import add_clock_options, best_of, setup_clock

import attnlab  # noqa: F401  (registers the families)
from attnlab.capture import run_with_cache
from attnlab.data.transforms import normalize
from attnlab.errors import AttnlabError
from attnlab.explore import explore
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.attribution import auto_layer, compute_cam
from attnlab.studies.inputs import ImageSelection

SPEC = InputSpec(size=(224, 224), channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 interpolation="bicubic", crop_pct=1.0)


def write_images(folder: Path, n: int) -> None:
    """Smooth random images (PNG compresses them like photographs, not like noise)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 255, (14, 14, 3), dtype=np.uint8)
        Image.fromarray(small).resize((224, 224), Image.BICUBIC).save(folder / f"img{i}.png")


def hover_ms(page: Path, repeats: int = 200) -> float:
    """Mean time of one redraw after a query change, in headless Chromium (None without a browser)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    try:
        import pytest

        from browser import start_chromium
        driver = start_chromium()
    except (ImportError, pytest.skip.Exception) as e:
        print(f"no browser timing: {e}")
        return float("nan")
    try:
        driver.get(page.as_uri())
        return driver.execute_script("""
            const ex = window.attnlabExplorer, n = arguments[0];
            ex.render();                                   // decode once
            const t0 = performance.now();
            for (let i = 0; i < n; i++) {
              ex.state.query = {kind: 'patch', y: (i % 14 + 0.5) / 14, x: ((i * 5) % 14 + 0.5) / 14};
              ex.render();
            }
            return (performance.now() - t0) / n;""", repeats)
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    add_clock_options(parser)
    args = parser.parse_args()
    clock = setup_clock(args)
    torch.manual_seed(0)
    net = create_model(args.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_images(folder, args.images)
        pixels, _ = ImageSelection(images=[str(folder)]).stacked(SPEC, pixel=True)
        x = normalize(pixels, SPEC)

        def capture():
            with torch.no_grad():
                logits, _ = run_with_cache(net, x, "*.attn.pattern")
            return logits

        try:
            cam_layer = auto_layer(net)
        except AttnlabError:  # no GradCAM on the page either
            cam_layer = None

        def passes():
            logits = capture()
            if cam_layer is not None:
                compute_cam(net, x, "gradcam", logits.argmax(-1).tolist(), layer=cam_layer, batch_size=8)

        out = Path(tmp) / "out"
        written = []

        def page():
            result = explore([net], [args.model], images=[str(folder)], input_spec=SPEC, device="cpu")
            written[:] = result.save(out)

        page()  # warm up (imports, caches)
        t_capture = best_of(capture, clock, args.repeats)
        t_passes = best_of(passes, clock, args.repeats)
        t_page = best_of(page, clock, args.repeats)
        size = written[0].stat().st_size
        print(f"{args.model}, {args.images} images at 224 px, page {size / 1e6:.1f} MB")
        print(f"capture passes (run_with_cache, every block): {t_capture:.3f} s")
        print(f"model passes explore needs (capture{' + GradCAM' if cam_layer else ''}): {t_passes:.3f} s")
        print(f"explore + save (the whole page):               {t_page:.3f} s")
        print(f"ratio page / model passes: {t_page / t_passes:.2f}x (target <= 2x); "
              f"page / capture alone: {t_page / t_capture:.2f}x")
        ms = hover_ms(written[0])
        if ms == ms:
            print(f"hover redraw in headless Chromium: {ms:.2f} ms per redraw (a frame is 16.7 ms)")


if __name__ == "__main__":
    main()
