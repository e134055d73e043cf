"""The notebooks as students meet them: JupyterLab in a real browser (Chromium driven by Playwright).

JupyterLab is started on localhost (a free port, a token, a temporary project home, the ``smoke``
profile) over a temporary copy of notebooks 02 and 05. Each is run top to bottom in the browser,
then every widget is moved the way a person moves it (the schedule explorer's sliders, the
stepper's play button and slider, the guidance slider, the sampler comparison (η box, fewer steps, run), a valid and an invalid pick in the label
picker). The test checks that the picture on the page changed, that the sliders have a usable
track and the pictures are shown at their own pixel size, and that no error appears: not in a
cell's output, the browser console, JupyterLab's log console, nor as a widget that failed to
render ("javascript error"). Screenshots stay in a temporary folder whose path is printed.

Deselect with ``-m "not browser"``. It needs the ``playwright`` package (``requirements.txt``) and a
Chromium on the machine (Debian's ``chromium`` package; ``LABKIT_CHROMIUM`` names another
executable); no browser is downloaded. Running as root where apt-get exists, a missing Chromium is
installed with ``apt-get install chromium``; otherwise the test is skipped with that advice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("02_schedulers.ipynb", "05_sampling.ipynb")
VIEWPORT = {"width": 1024, "height": 900}  # the narrowest window the widgets are laid out for
MIN_TRACK_PX = 300
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# ---- the browser and the server ------------------------------------------------------------------
def find_chromium() -> str | None:
    named = os.environ.get("LABKIT_CHROMIUM")
    if named:
        return named if Path(named).is_file() else shutil.which(named)
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def install_chromium() -> str | None:
    """apt-get install chromium, where that is possible without asking (root, apt-get present)."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        return None
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    if subprocess.run(install, env=environment, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=environment, capture_output=True)
        subprocess.run(install, env=environment, capture_output=True)
    return find_chromium()


@pytest.fixture(scope="module")
def chromium_path() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -r requirements.txt")
    path = find_chromium() or install_chromium()
    if path is None:
        pytest.skip("no Chromium found: install Debian's `chromium` package (apt-get install chromium) "
                    "or set LABKIT_CHROMIUM to a Chromium or Chrome executable")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_settings(folder: Path) -> None:
    """JupyterLab user settings: every cell rendered (no windowing), no news or update pop-ups."""
    settings = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    }
    for relative, values in settings.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """JupyterLab over a copy of the notebooks; yields (base URL, token, the folder, the server's log path)."""
    base = tmp_path_factory.mktemp("browser")
    notebooks = base / "notebooks"
    notebooks.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, notebooks / name)
    write_settings(base / "lab-settings")
    home = base / "home"
    home.mkdir()
    port, token = free_port(), uuid.uuid4().hex
    environment = dict(
        os.environ,
        LABKIT_HOME=str(home),
        LABKIT_PROFILE="smoke",
        TQDM_DISABLE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        JUPYTERLAB_SETTINGS_DIR=str(base / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "lab-workspaces"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
    )
    log_path = base / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        f"--ServerApp.token={token}", f"--ServerApp.root_dir={notebooks}", "--ServerApp.port_retries=0",
        "--LabApp.expose_app_in_browser=True", "--allow-root",
    ]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=notebooks)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
        yield url, token, notebooks, log_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def screenshots(request) -> Path:
    """A temporary folder for the screenshots, kept after the run; its path is printed past pytest's capture."""
    folder = Path(tempfile.mkdtemp(prefix="labkit-browser-screenshots-"))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\nbrowser screenshots: {folder}")
    else:
        print(f"browser screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


# ---- driving a notebook -------------------------------------------------------------------------
NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model) return null;
  const cells = panel.content.model.cells, counts = [], errors = [], stderr = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    counts.push(cell.executionCount);
    for (const output of cell.outputs.toJSON()) {
      if (output.output_type === 'error') errors.push(output.ename + ': ' + output.evalue);
      if (output.output_type === 'stream' && output.name === 'stderr') stderr.push([].concat(output.text).join(''));
    }
  }
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {counts, errors, stderr, status: kernel ? kernel.status : 'none'};
}"""


class Notebook:
    """One notebook open in JupyterLab in ``page``; records the browser console's errors."""

    def __init__(self, page, url: str, token: str, name: str, screenshots: Path):
        self.page, self.name, self.screenshots = page, name, screenshots
        self.console_errors: list[str] = []
        page.on("console", lambda message: self.console_errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))
        # a workspace of its own, so no tab of another notebook is restored beside it
        workspace = re.sub(r"\W", "-", Path(name).stem)
        page.goto(f"{url}/lab/workspaces/{workspace}/tree/{name}?reset&token={token}", wait_until="domcontentloaded",
                  timeout=120_000)
        page.wait_for_function("name => { const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                               " return widget && widget.context && widget.context.path === name && widget.content"
                               " && widget.sessionContext.session; }", arg=name, timeout=120_000)
        self.wait_for_idle(timeout=120)

    def state(self) -> dict:
        return self.page.evaluate(NOTEBOOK_STATE)

    def wait_for_idle(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state and state["status"] == "idle":
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: the kernel is still {state and state['status']} after {timeout} s")
            time.sleep(0.5)

    def run_all(self, timeout: float = 900) -> dict:
        # the stored outputs carry execution counts: clear them, so a count means "ran here"
        self.page.evaluate("""async () => {
          await window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs');
          const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
          for (let i = 0; i < cells.length; i++) {
            if (cells.get(i).type === 'code') cells.get(i).executionCount = null;
          }
        }""")
        assert all(count is None for count in self.state()["counts"]), f"{self.name}: stale execution counts"
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(2)
            state = self.state()
            if state["errors"]:
                raise AssertionError(f"{self.name}: a cell failed: {state['errors']}")
            if state["status"] == "idle" and all(count is not None for count in state["counts"]):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: not finished after {timeout} s: {state}")

    def shot(self, label: str, locator=None) -> Path:
        path = self.screenshots / f"{Path(self.name).stem}_{label}.png"
        (locator or self.page).screenshot(path=str(path))
        return path

    def widget(self, css: str, has_text: str | None = None):
        """The rendered widget view (``.jupyter-widgets`` container) matching ``css``."""
        locator = self.page.locator(css)
        return locator.filter(has_text=has_text) if has_text else locator

    def log_console_text(self) -> str:
        self.page.evaluate("() => window.jupyterapp.commands.execute('logconsole:open', {insertMode: 'split-bottom'})")
        panel = self.page.locator(".jp-LogConsolePanel")
        panel.first.wait_for(timeout=30_000)
        time.sleep(1)
        return panel.first.inner_text()

    def check_clean(self) -> None:
        state = self.wait_for_idle()
        assert not state["errors"], f"{self.name}: errors in the outputs: {state['errors']}"
        tracebacks = [text for text in state["stderr"] if "Traceback" in text or "Error" in text]
        assert not tracebacks, f"{self.name}: errors on stderr: {tracebacks}"
        page_text = self.page.locator(".jp-Notebook").inner_text().lower()
        for failed in ("javascript error", "error displaying widget", "failed to load model class"):
            assert failed not in page_text, f"{self.name}: a widget failed to render ({failed})"
        assert self.page.locator(".jp-Notebook .widget-error, .jp-Notebook .jupyter-widgets-error").count() == 0
        assert not self.console_errors, f"{self.name}: browser console errors: {self.console_errors}"
        log = self.log_console_text()
        self.shot("page_with_log_console")
        assert "Traceback" not in log and "Error" not in log, f"{self.name}: the log console shows errors:\n{log}"


def picture_of(locator) -> bytes:
    return locator.screenshot()


def wait_for_change(locator, before: bytes, what: str, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        now = picture_of(locator)
        if now != before:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: the picture did not change within {timeout} s")
        time.sleep(0.5)


def slider_named(notebook: Notebook, label: str):
    """The slider widget whose description reads ``label`` (also usable as a ``has=`` filter)."""
    sliders = notebook.page.locator(".widget-slider, .widget-hslider")
    return sliders.filter(has=notebook.page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))


def drag_slider(notebook: Notebook, slider, fraction: float | None = None) -> None:
    """Drag the slider's handle to ``fraction`` of its track, as a mouse does (None: well away from
    where it is, towards the far end)."""
    track = slider.locator(".noUi-target, .ui-slider").first
    handle = slider.locator(".noUi-handle, .ui-slider-handle").first
    handle.scroll_into_view_if_needed()
    box, grip = track.bounding_box(), handle.bounding_box()
    if fraction is None:
        fraction = 0.05 if grip["x"] + grip["width"] / 2 > box["x"] + box["width"] / 2 else 0.95
    mouse = notebook.page.mouse
    mouse.move(grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2)
    mouse.down()
    target = box["x"] + fraction * box["width"]
    for step in range(1, 11):
        mouse.move(grip["x"] + (target - grip["x"]) * step / 10, grip["y"] + grip["height"] / 2)
    mouse.up()


def track_width(slider) -> float:
    return slider.locator(".noUi-target, .ui-slider").first.bounding_box()["width"]


def assert_natural_size(image, what: str) -> None:
    """The picture is shown at its own pixel size: the browser neither stretches nor squeezes it."""
    natural, shown = image.evaluate("img => [img.naturalWidth, img.naturalHeight, img.clientWidth, img.clientHeight]")[:2], \
        image.evaluate("img => [img.clientWidth, img.clientHeight]")
    assert natural[0] > 0 and list(natural) == list(shown), f"{what}: {natural[0]}x{natural[1]} PNG shown at {shown[0]}x{shown[1]}"
    rendering = image.evaluate("img => getComputedStyle(img).imageRendering")
    assert rendering == "pixelated", f"{what}: image-rendering is {rendering}"


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    yield opened
    context.close()


# ---- the tests ----------------------------------------------------------------------------------
def test_schedule_explorer_in_the_browser(lab_server, page, screenshots):
    url, token, _, _ = lab_server
    notebook = Notebook(page, url, token, "02_schedulers.ipynb", screenshots)
    notebook.run_all(timeout=600)
    explorer = notebook.page.locator(".jp-Notebook .jupyter-widgets.widget-vbox").filter(
        has=page.locator("img.labkit-pixelated")).first
    explorer.scroll_into_view_if_needed()
    pictures = explorer.locator("img.labkit-pixelated")
    pictures.last.wait_for(timeout=60_000)
    assert pictures.count() == 3  # x_0 and x_t, then the curves
    notebook.shot("explorer_before", explorer)
    for index, what in ((0, "x_0"), (1, "x_t"), (2, "the curves")):
        assert_natural_size(pictures.nth(index), f"schedule explorer, {what}")
    t_slider, steps_slider = slider_named(notebook, "t"), slider_named(notebook, "T (steps)")
    assert t_slider.count() == 1 and steps_slider.count() == 1
    for name, slider in (("t", t_slider), ("T", steps_slider)):
        assert track_width(slider) >= MIN_TRACK_PX, f"slider {name}: track {track_width(slider):.0f} px at {VIEWPORT['width']} px"

    noisy, curves = pictures.nth(1), pictures.nth(2)
    before = (picture_of(noisy), picture_of(curves))
    drag_slider(notebook, t_slider, 0.9)
    after_t = (wait_for_change(noisy, before[0], "dragging t: x_t"), wait_for_change(curves, before[1], "dragging t: the curves"))
    drag_slider(notebook, steps_slider, 0.2)
    wait_for_change(curves, after_t[1], "dragging T")
    notebook.wait_for_idle()
    notebook.shot("explorer_after", explorer)
    notebook.shot("page")
    notebook.check_clean()


def test_sampling_widgets_in_the_browser(lab_server, page, screenshots):
    url, token, _, _ = lab_server
    notebook = Notebook(page, url, token, "05_sampling.ipynb", screenshots)
    notebook.run_all(timeout=900)
    widgets = page.locator(".jp-Notebook .jupyter-widgets.widget-vbox")

    # the denoising stepper: play, then drag the step slider
    stepper = widgets.filter(has=page.locator(".widget-play")).first
    stepper.scroll_into_view_if_needed()
    image = stepper.locator("img.labkit-pixelated").first
    assert_natural_size(image, "denoising stepper")
    assert track_width(slider_named(notebook, "step")) >= MIN_TRACK_PX
    notebook.shot("stepper_before", stepper)
    before = picture_of(image)
    stepper.locator(".widget-play button").first.click()  # play
    played = wait_for_change(image, before, "the play button")
    time.sleep(1.5)
    drag_slider(notebook, slider_named(notebook, "step"), 0.5)
    wait_for_change(image, played, "dragging the step slider")
    notebook.wait_for_idle()
    notebook.shot("stepper_after", stepper)

    # the guidance slider: another w samples new images, captioned with their labels
    guidance = widgets.filter(has=slider_named(notebook, "w")).first
    guidance.scroll_into_view_if_needed()
    tiles = guidance.locator("img.labkit-pixelated")
    assert tiles.count() >= 2
    assert_natural_size(tiles.first, "guidance slider")
    assert track_width(slider_named(notebook, "w")) >= MIN_TRACK_PX
    captions = guidance.inner_text()
    assert "guidance scale w" in captions and re.search(r"(sphere|cube|cylinder)", captions)
    notebook.shot("guidance_before", guidance)
    caption_before = guidance.inner_text()
    before = picture_of(tiles.first)
    drag_slider(notebook, slider_named(notebook, "w"))
    wait_for_change(tiles.first, before, "moving the guidance scale")
    page.wait_for_function("([element, text]) => element.innerText !== text",
                           arg=[guidance.element_handle(), caption_before], timeout=60_000)
    notebook.wait_for_idle()
    notebook.shot("guidance_after", guidance)

    # the sampler comparison: η only for DDIM; fewer steps in one column, run, and that column shows the new setting
    comparison = widgets.filter(has=page.get_by_role("button", name="run", exact=True)).first
    comparison.scroll_into_view_if_needed()
    columns = comparison.locator(".widget-vbox").filter(has=page.locator(".widget-dropdown"))
    assert columns.count() == 3
    for index, sampler in enumerate(("ddpm", "ddim", "dpmsolver++")):
        eta_input = columns.nth(index).locator("input").nth(1)
        assert eta_input.is_disabled() == (sampler != "ddim"), f"the η box of the {sampler} column"
    assert_natural_size(columns.first.locator("img.labkit-pixelated").first, "sampler comparison")
    assert "synthetic judge" in comparison.inner_text() and "s per image" in comparison.inner_text()
    notebook.shot("samplers_before", comparison)
    steps_input = columns.first.locator("input").first
    steps_input.fill("3")
    steps_input.press("Enter")
    comparison.get_by_role("button", name="run", exact=True).click()
    page.wait_for_function("element => /DDPM, 3 steps/.test(element.innerText)",
                           arg=columns.first.element_handle(), timeout=120_000)
    notebook.wait_for_idle()
    notebook.shot("samplers_after", comparison)

    # the label picker: nothing shown before the first generate, then a valid and an invalid pick
    picker = widgets.filter(has=page.locator(".widget-select-multiple")).first
    picker.scroll_into_view_if_needed()
    assert picker.locator("img").count() == 0  # no placeholder picture
    select = picker.locator("select").first
    select.select_option(["red sphere", "cyan cube"])
    picker.get_by_text(re.compile(r"ready: (red sphere, cyan cube|cyan cube, red sphere)")).wait_for(timeout=30_000)
    picker.locator("button", has_text="generate").click()
    picker.locator("img.labkit-pixelated").first.wait_for(timeout=120_000)
    page.wait_for_function("element => /4 scenes of .*red sphere/.test(element.innerText)",
                           arg=picker.element_handle(), timeout=120_000)
    assert picker.locator("img.labkit-pixelated").count() == 4
    assert_natural_size(picker.locator("img.labkit-pixelated").first, "label picker")
    assert not picker.locator("button", has_text="generate").is_disabled()
    notebook.wait_for_idle()
    notebook.shot("picker_valid", picker)
    select.select_option(["gray cube", "red cube", "blue cube", "green cube"])
    picker.get_by_text("refused").wait_for(timeout=30_000)
    page.wait_for_function("element => element.querySelectorAll('img').length === 0",
                           arg=picker.element_handle(), timeout=30_000)  # the old pictures are gone
    notebook.wait_for_idle()
    notebook.shot("picker_refused", picker)
    notebook.check_clean()
