"""``explore.html`` in a real headless Chromium: opened from disk, clicked, its overlay pixels read back and
checked against the attention Python computes; no console error, no request leaving the file, and
untrusted names shown as text with no script run. One page, built once for the module (two micro
models at 32 px, three images)."""
import numpy as np
import pytest
from PIL import Image

from attnlab.capture import run_with_cache
from attnlab.explore import explore
from attnlab.metrics import mean_attention_distance_per_image
from attnlab.spec import ModelSpec
from attnlab.studies.attribution import attention_rollout
from attnlab.studies.inputs import ImageSelection

from browser import console_errors, start_chromium
from test_explore import SPEC, sharpened

pytest.importorskip("selenium")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

XSS_CLASS = "<img src=x onerror=alert(1)>"
XSS_LABEL = "<b onmouseover=window.__xss=2>ReViT</b>"
XSS_FILE = "script><img src=x onerror=window.__xss=1>.png"   # under a folder named `evil<`: the path has </script>

READ_ALPHA = """
const [model, ph, pw, gh, gw] = arguments;
const c = document.querySelector(`section[data-model="${model}"] canvas.overlay`);
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
const out = [];
for (let r = 0; r < gh; r++) for (let k = 0; k < gw; k++) {
  const x = k * pw + (pw >> 1), y = r * ph + (ph >> 1);
  out.push(d[(y * c.width + x) * 4 + 3]);
}
return out;
"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    folder = root / "imgs"
    (folder / "evil<").mkdir(parents=True)
    rng = np.random.default_rng(1)
    paths = [folder / "a.png", folder / "b.png", folder / "evil<" / XSS_FILE]
    for p in paths:
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    classes = [f"{XSS_CLASS} {i}" for i in range(10)]
    nets = [sharpened("vit_micro_patch4_32"), sharpened("revit_micro_patch4_32")]
    pairs = [(n, ModelSpec(arch=a, options={}, input=SPEC, classes=classes))
             for n, a in zip(nets, ["vit_micro_patch4_32", "revit_micro_patch4_32"])]
    result = explore(pairs, ["ViT", XSS_LABEL], images=[str(folder)], layers=[0, 2, 5], device="cpu")
    out = result.save(root / "out")[0]
    x, _ = ImageSelection(images=[str(folder)]).stacked(SPEC)
    attention = []
    for net, view in zip(nets, result.views):
        names = [n for kind in view.plan.sources for n in view.plan.points[kind]]
        _, cache = run_with_cache(net, x, names)
        attention.append({kind: [cache[n].double() for n in view.plan.points[kind]] for kind in view.plan.sources})
    return {"path": out, "result": result, "nets": nets, "x": x, "attention": attention,
            "names": [str(p) for p in paths]}


@pytest.fixture(scope="module")
def chromium():
    d = start_chromium()  # first: without a browser the module skips before building the page
    yield d
    d.quit()


@pytest.fixture(scope="module")
def driver(chromium, page):
    chromium.get(page["path"].as_uri())
    return chromium


def expected_alpha(page, model, block, token, image=0, head=None, kind="applied"):
    """What the overlay must show: the query's row over the patch keys, scaled so its maximum is 255."""
    a = page["attention"][model][kind][block][image]                     # [H, N, N]
    row = (a.mean(0) if head is None else a[head])[token]
    p = page["result"].views[model].plan.layout.num_prefix_tokens
    patch = row[p:].numpy()
    return np.rint(255 * patch / patch.max())


def overlay(driver, page, model):
    lay = page["result"].views[model].plan.layout
    (ph, pw), (gh, gw) = lay.patch_size, lay.grid_size
    return np.array(driver.execute_script(READ_ALPHA, model, ph, pw, gh, gw), dtype=np.float64)


def check(driver, page, model, block, token, **kw):
    got, want = overlay(driver, page, model), expected_alpha(page, model, block, token, **kw)
    assert np.abs(got - want).max() <= 1, (model, block, token, kw, got, want)
    assert want.std() > 10                                              # a row that tells patches apart


def click_patch(driver, model, row, col, grid=8):
    canvas = driver.find_element(By.CSS_SELECTOR, f'section[data-model="{model}"] canvas.grid')
    w, h = canvas.size["width"], canvas.size["height"]
    dx, dy = (col + 0.5) * w / grid - w / 2, (row + 0.5) * h / grid - h / 2   # offsets from the centre
    ActionChains(driver).move_to_element_with_offset(canvas, int(dx), int(dy)).click().perform()


def keys(driver, *sequence):
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    ActionChains(driver).send_keys(*sequence).perform()


def state(driver, model):
    """What panel ``model`` shows: its block, head, attention kind and query token (data attributes)."""
    return driver.execute_script("return Object.assign({}, document.querySelector(arguments[0]).dataset)",
                                 f'section[data-model="{model}"]')


def metric(driver, model, name, what="dataset.value"):
    return driver.execute_script(f"return document.querySelector(arguments[0]).{what}",
                                 f'section[data-model="{model}"] [data-metric="{name}"]')


def test_page_opens_offline_with_no_error_and_no_request(driver, page):
    assert driver.execute_script("return window.attnlabExplorer && window.attnlabExplorer.ready") is True
    assert console_errors(driver) == []
    requests = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert [r for r in requests if not r.startswith("data:")] == []
    refs = driver.execute_script("return [...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)")
    assert refs and all(r.startswith("data:") for r in refs), refs


def test_clicked_patch_shows_its_attention_across_blocks_models_heads_and_kinds(driver, page):
    click_patch(driver, 0, 2, 5)
    token = 1 + 2 * 8 + 5
    assert state(driver, 0)["token"] == str(token) and state(driver, 0)["block"] == "0"
    check(driver, page, 0, 0, token)
    keys(driver, Keys.PAGE_DOWN)                                          # next stored block: 2
    assert state(driver, 0)["block"] == "2"
    check(driver, page, 0, 2, token)
    check(driver, page, 1, 2, token)                                      # the other model, same query and block
    keys(driver, "]")                                                     # block 5
    check(driver, page, 1, 5, token)
    keys(driver, Keys.ARROW_LEFT, Keys.ARROW_UP)                          # query moves to (1, 4)
    check(driver, page, 0, 5, 1 + 8 + 4)
    Select(driver.find_element(By.ID, "head")).select_by_value("2")
    check(driver, page, 0, 5, 1 + 8 + 4, head=2)
    driver.find_element(By.ID, "kind-own").click()                        # ReViT's own softmax(S_l)
    assert state(driver, 1)["kind"] == "own" and state(driver, 0)["kind"] == "applied"
    check(driver, page, 1, 5, 1 + 8 + 4, head=2, kind="own")
    check(driver, page, 0, 5, 1 + 8 + 4, head=2)
    driver.find_element(By.CSS_SELECTOR, 'section[data-model="1"] .prefix button[data-prefix="0"]').click()
    check(driver, page, 1, 5, 0, head=2, kind="own")                      # the class token as the query
    driver.find_element(By.CSS_SELECTOR, '.thumbs button[data-image="2"]').click()
    check(driver, page, 0, 5, 0, head=2, image=2)
    keys(driver, Keys.PAGE_UP, Keys.PAGE_UP)
    check(driver, page, 1, 0, 0, head=2, image=2, kind="own")
    assert console_errors(driver) == []


def test_numbers_beside_the_image_are_the_metrics(driver, page):
    Select(driver.find_element(By.ID, "head")).select_by_value("-1")
    driver.find_element(By.ID, "kind-applied").click()
    driver.find_element(By.CSS_SELECTOR, '.thumbs button[data-image="1"]').click()
    keys(driver, Keys.PAGE_DOWN)                                          # block 2
    a = page["attention"][0]["applied"][2][1:2].float()
    want = float(mean_attention_distance_per_image(a, layout=page["result"].views[0].plan.layout).mean())
    assert float(metric(driver, 0, "imad")) == pytest.approx(want, rel=1e-5)
    assert metric(driver, 0, "uent", "textContent") == f"{np.log(65):.3f} nats"


def test_rollout_overlay_is_attention_rollout(driver, page):
    driver.find_element(By.CSS_SELECTOR, '.thumbs button[data-image="0"]').click()
    driver.find_element(By.ID, "overlay-rollout").click()
    for model in (0, 1):
        m = attention_rollout(page["nets"][model], page["x"][:1])[0].flatten().double().numpy()
        assert np.abs(overlay(driver, page, model) - np.rint(255 * m / m.max())).max() <= 1
    driver.find_element(By.ID, "overlay-attention").click()


def test_hover_redraws_within_a_frame(driver, page):
    canvas = driver.find_element(By.CSS_SELECTOR, 'section[data-model="0"] canvas.grid')
    before = driver.execute_script("return window.attnlabExplorer.renders")
    chain = ActionChains(driver)
    for i in range(8):
        chain.move_to_element_with_offset(canvas, -140 + 40 * i, -100)
    chain.perform()
    driver.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert driver.execute_script("return window.attnlabExplorer.renders") > before
    assert state(driver, 0)["token"] == str(1 + 1 * 8 + 7)                # hovering (1, 7) shows its row
    assert driver.execute_script("return window.attnlabExplorer.lastRenderMs") < 16


def test_untrusted_names_show_as_text_and_run_nothing(driver, page):
    text = driver.find_element(By.TAG_NAME, "body").text
    assert XSS_LABEL in text and XSS_CLASS in text
    driver.find_element(By.CSS_SELECTOR, '.thumbs button[data-image="2"]').click()
    assert "</script><img src=x onerror=window.__xss=1>.png" in driver.find_element(By.ID, "image-info").text
    assert page["names"][2] in driver.find_element(By.ID, "image-info").text
    assert driver.execute_script("return window.__xss") is None
    n_images = len(page["names"])
    assert driver.execute_script("return document.images.length") == n_images + 2   # thumbnails + one per panel
    assert driver.execute_script("return document.querySelectorAll('b, [onerror], [onmouseover]').length") == 0
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text
    assert console_errors(driver) == []
