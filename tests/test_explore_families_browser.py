"""Windowed, pooled and class attention in a real headless Chromium: a Swin, an MViTv2, an EVA02 and a CaiT
side by side on one page (built once for the module, every layer stored). A click on the image selects the
query whose cell holds the point in each model's shown layer; the overlay's pixels are read back and checked
against the attention row Python captured, drawn at the keys' true image positions (Swin's shifted windows:
keys of wrapped regions at the opposite border) and zero outside the query's keys."""
import numpy as np
import pytest
from PIL import Image

from attnlab.capture import run_with_cache
from attnlab.explore import explore
from attnlab.geometry import swin_block
from attnlab.studies.inputs import ImageSelection

from browser import console_errors, start_chromium
from test_explore_families import family

pytest.importorskip("selenium")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

MODELS = ["swin", "mvitv2", "eva02", "cait"]
SWIN, MVIT, EVA, CAIT = range(4)

READ_ALPHA = """
const c = document.querySelector(`section[data-model="${arguments[0]}"] canvas.overlay`);
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
const out = new Array(c.width * c.height);
for (let i = 0; i < out.length; i++) out[i] = d[4 * i + 3];
return out;
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    folder = root / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    built = [family(name) for name in MODELS]
    result = explore(built, MODELS, images=[str(folder)], layers="all", device="cpu")
    out = result.save(root / "out")[0]
    attention = []
    for (net, spec), view in zip(built, result.views):
        x, _ = ImageSelection(images=[str(folder)]).stacked(spec.input)
        _, cache = run_with_cache(net, x, view.plan.points["applied"])
        attention.append([cache[n].double() for n in view.plan.points["applied"]])
    return {"path": out, "result": result, "nets": [n for n, _ in built], "attention": attention,
            "sizes": [spec.input.size[0] for _, spec in built]}


@pytest.fixture(scope="module")
def driver(page):
    d = start_chromium(width=1800, height=1200)
    d.get(page["path"].as_uri())
    yield d
    d.quit()


def overlay(driver, model, size):
    return np.array(driver.execute_script(READ_ALPHA, model), dtype=np.float64).reshape(size, size)


def click(driver, model, y, x, size):
    """Click pixel (y, x) of model ``model``'s image (``size`` px square)."""
    canvas = driver.find_element(By.CSS_SELECTOR, f'section[data-model="{model}"] canvas.grid')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    w, h = canvas.size["width"], canvas.size["height"]
    dx, dy = (x + 0.5) * w / size - w / 2, (y + 0.5) * h / size - h / 2
    ActionChains(driver).move_to_element_with_offset(canvas, int(round(dx)), int(round(dy))).click().perform()


def to_step(driver, k):
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    ActionChains(driver).send_keys(*([Keys.PAGE_UP] * 12 + [Keys.PAGE_DOWN] * k)).perform()


def state(driver, model):
    return driver.execute_script("return Object.assign({}, document.querySelector(arguments[0]).dataset)",
                                 f'section[data-model="{model}"]')


def metric(driver, model, name, what="dataset.value"):
    return driver.execute_script(f"return document.querySelector(arguments[0]).{what}",
                                 f'section[data-model="{model}"] [data-metric="{name}"]')


def painted(row, tiles, size):
    """The overlay a row must give: each key's tile ``(y0, x0, h, w)`` filled with round(255 a / max a)."""
    want = np.zeros((size, size))
    values = np.rint(255 * row / row.max())
    assert values.std() > 10, values                                                    # a row that tells keys apart
    for (y0, x0, h, w), v in zip(tiles, values):
        want[y0:y0 + h, x0:x0 + w] = v
    return want


def test_page_opens_with_no_error(driver):
    assert driver.execute_script("return window.attnlabExplorer && window.attnlabExplorer.ready") is True
    assert console_errors(driver) == []
    requests = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [r for r in requests if not r.startswith("data:")] == []


@pytest.mark.parametrize("cell", [(12, 1), (5, 5)])
def test_swin_shifted_window_drawn_at_the_keys_true_positions(driver, page, cell):
    """Block 1 is shifted by 3 tokens: (12, 1) is in the wrapped corner window (its keys at the bottom and
    top, left and right borders), (5, 5) in a window spanning tokens 3..9, off the regular partition."""
    to_step(driver, 1)
    r, c = cell
    click(driver, SWIN, r * 4 + 2, c * 4 + 2, 56)
    g = swin_block(page["nets"][SWIN].layers[0].blocks[1], (56, 56))
    w, i = map(int, np.argwhere((g.query_pos == torch_tensor([r * 4 + 2, c * 4 + 2])).all(-1).numpy())[0])
    assert state(driver, SWIN)["block"] == "1" and state(driver, SWIN)["token"] == str(w * 49 + i)
    a = page["attention"][SWIN][1].reshape(2, 4, 2, 49, 49)[0, w].mean(0)[i].numpy()     # image 0, mean over heads
    keys = g.key_pos[w].numpy()
    tiles = [(int(y) - 2, int(x) - 2, 4, 4) for y, x in keys]                            # true, un-rolled positions
    want = painted(a, tiles, 56)
    got = overlay(driver, SWIN, 56)
    assert np.abs(got - want).max() <= 1                                                 # zero outside the window
    assert (want > 0).sum() >= 4 * 16 and (want == 0).sum() > 56 * 56 - 49 * 16 - 1
    if cell == (12, 1):
        assert keys[:, 0].min() < 12 and keys[:, 0].max() > 44                           # wrapped: both borders
        assert got[:, 28:].max() == 0 and got[40:, :12].max() == 255                     # its region: bottom left
    assert console_errors(driver) == []


def torch_tensor(values):
    import torch

    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("block", [0, 3])
def test_mvit_query_tile_and_its_row_on_the_key_grid(driver, page, block):
    """Block 0: 16x16 queries of 4 px over a 4x4 key grid of 16 px; block 3: 4x4 queries of 16 px over 8x8 keys."""
    to_step(driver, block)
    y, x = 41, 22
    click(driver, MVIT, y, x, 64)
    a = page["attention"][MVIT][block][0].mean(0)                                        # [Nq, Nk], mean over heads
    nq, nk = a.shape
    qs, ks = int(round(nq ** 0.5)), int(round(nk ** 0.5))
    token = (y // (64 // qs)) * qs + x // (64 // qs)
    assert state(driver, MVIT)["block"] == str(block) and state(driver, MVIT)["token"] == str(token)
    t = 64 // ks
    tiles = [(kr * t, kc * t, t, t) for kr in range(ks) for kc in range(ks)]
    assert np.abs(overlay(driver, MVIT, 64) - painted(a[token].numpy(), tiles, 64)).max() <= 1
    want = float(page["result"].views[MVIT].metrics["applied"].image_mad[block][0, -1])
    assert float(metric(driver, MVIT, "imad")) == pytest.approx(want, rel=1e-5)


def test_eva02_and_cait_class_attention_beside_them(driver, page):
    to_step(driver, 3)                                                                   # EVA02: last block (1)
    click(driver, MVIT, 41, 22, 64)                                                      # the same image point ...
    y, x = 41 / 64 * 56, 22 / 64 * 56
    token = 1 + int(y // 14) * 4 + int(x // 14)                                          # ... in EVA02's 4x4 patches
    assert state(driver, EVA)["block"] == "1" and state(driver, EVA)["token"] == str(token)
    a = page["attention"][EVA][1][0].mean(0)[token, 1:].numpy()
    tiles = [(r * 14, c * 14, 14, 14) for r in range(4) for c in range(4)]
    assert np.abs(overlay(driver, EVA, 56) - painted(a, tiles, 56)).max() <= 1
    # CaiT's block 3 is class attention: only the class token queries, over the class token and the patches
    assert state(driver, CAIT)["block"] == "3" and state(driver, CAIT)["token"] == "0"
    row = page["attention"][CAIT][3][0].mean(0)[0, 1:].numpy()
    tiles = [(r * 16, c * 16, 16, 16) for r in range(4) for c in range(4)]
    assert np.abs(overlay(driver, CAIT, 64) - painted(row, tiles, 64)).max() <= 1
    assert metric(driver, CAIT, "qmad", "textContent") == "–" and metric(driver, CAIT, "imad", "textContent") == "–"
    note = driver.find_element(By.CSS_SELECTOR, f'section[data-model="{CAIT}"] .note').text
    assert "only the class token queries" in note
    assert console_errors(driver) == []


def test_rollout_says_why_not_and_gradcam_is_drawn_on_windows(driver, page):
    driver.find_element(By.ID, "overlay-rollout").click()
    note = driver.find_element(By.CSS_SELECTOR, f'section[data-model="{SWIN}"] .note').text
    assert "no attention rollout" in note and overlay(driver, SWIN, 56).max() == 0
    assert overlay(driver, EVA, 56).max() == 255                                         # EVA02 has rollout
    driver.find_element(By.ID, "overlay-gradcam").click()
    for model in (SWIN, MVIT):
        cam = page["result"].views[model].gradcam[0]
        size = page["sizes"][model]
        assert np.abs(overlay(driver, model, size) - np.rint(255 * cam / cam.max())).max() <= 1
    driver.find_element(By.ID, "overlay-attention").click()
    assert console_errors(driver) == []
