"""Interactive notebook widgets (ipywidgets 7.7 and 8: only APIs both versions have).

Each widget is a small class holding its ipywidgets container in ``.widget`` (display it by
ending a cell with ``explorer.widget``) and its current state in plain attributes, so code
and tests can drive it by setting a control's ``.value`` and read what it shows.
"""

from __future__ import annotations

import html

import torch

from labkit.config import ConfigError
from labkit.figures import as_uint8
from labkit.images import as_written, to_model_range
from labkit.labels import ConditionError, LabelSpace
from labkit.metrics import top_k_selection
from labkit.sample import SAMPLERS, sample_conditions
from labkit.sampler_comparison import DEFAULT_SETTINGS, SamplerSetting, check_setting, compare_samplers, steps_of
from labkit.schedules import SCHEDULES, NoiseSchedule
from labkit.widget_layout import (  # noqa: F401  (PIXELATED, STALE, png_size: also reachable here)
    DESCRIPTION_WIDTH,
    PIXELATED,
    STALE,
    ImageTiles,
    busy,
    control_layout,
    enlarge,
    figure_to_png,
    new_image_widget,
    picture_png,
    png_size,
    show_png,
    side_by_side,
    style_widget,
)


def _to_model_range(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) in [0, 255] or float (3, H, W) in [-1, 1] -> float32 (3, H, W) in [-1, 1]."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one image of shape (3, H, W), got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return to_model_range(image)
    return image.detach().float().cpu()


class ScheduleExplorer:
    """Explore the forward process q(x_t | x_0) of each β schedule on one image.

    Controls: a Dropdown for the schedule, an IntSlider for T (``num_train_timesteps``) and an
    IntSlider for t, each on its own row. Every change redraws x_0 and x_t (enlarged by an
    integer factor) next to the ᾱ_t and log-SNR curves with the current t marked. The noise ε is drawn once from ``seed``, so a redraw is deterministic:
    ``current_noisy_image == NoiseSchedule(schedule, T).add_noise(x0, noise, t)``.

    Args:
        image: uint8 (3, H, W) in [0, 255] or float (3, H, W) in [-1, 1].
        schedule: the initial schedule (default "cosine"); ``schedules`` lists the choices.
        num_train_timesteps: the initial T (default 1000); the T slider spans
            [``min_timesteps``, ``max_timesteps``] in steps of ``timesteps_step``.
        timestep: the initial t (default T // 2).
        seed: seed of the fixed noise (default 0).
        beta_start, beta_end: the β range of the linear / quadratic / sigmoid schedules.

    State: ``schedule_name``, ``num_train_timesteps``, ``timestep`` (see :attr:`state`),
    ``noise_schedule`` (the current :class:`NoiseSchedule`), ``x0`` and ``noise`` (1, 3, H, W),
    ``current_noisy_image`` (3, H, W) float, ``figure_png`` (the curves as PNG bytes), ``pictures``
    (the :class:`ImageTiles` of x_0 and x_t).
    """

    def __init__(
        self,
        image: torch.Tensor,
        schedule: str = "cosine",
        num_train_timesteps: int = 1000,
        timestep: int | None = None,
        seed: int = 0,
        schedules: tuple[str, ...] = SCHEDULES,
        min_timesteps: int = 10,
        max_timesteps: int = 1000,
        timesteps_step: int = 10,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ):
        import ipywidgets as widgets

        if schedule not in schedules:
            raise ValueError(f"schedule {schedule!r} is not among the choices {', '.join(schedules)}")
        if not min_timesteps <= num_train_timesteps <= max_timesteps:
            raise ValueError(
                f"num_train_timesteps={num_train_timesteps} is outside the T slider's range "
                f"[{min_timesteps}, {max_timesteps}]; widen min_timesteps/max_timesteps"
            )
        self.x0 = _to_model_range(image)[None]  # (1, 3, H, W)
        generator = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(self.x0.shape, generator=generator)  # (1, 3, H, W), fixed
        self.beta_start, self.beta_end = beta_start, beta_end
        self._schedules: dict[tuple[str, int], NoiseSchedule] = {}
        self._suspended = False
        timestep = num_train_timesteps // 2 if timestep is None else timestep

        self.schedule_dropdown = widgets.Dropdown(
            options=list(schedules), value=schedule, description="schedule",
            layout=widgets.Layout(width="260px"), style={"description_width": DESCRIPTION_WIDTH},
        )
        self.steps_slider = widgets.IntSlider(
            value=num_train_timesteps,
            min=min_timesteps,
            max=max_timesteps,
            step=timesteps_step,
            description="T (steps)",
            continuous_update=False,
            **control_layout(widgets),
        )
        self.timestep_slider = widgets.IntSlider(
            value=min(timestep, num_train_timesteps - 1),
            min=0,
            max=num_train_timesteps - 1,
            description="t",
            continuous_update=False,
            **control_layout(widgets),
        )
        self.pictures = ImageTiles(height=128)  # x_0 and x_t, enlarged pixel for pixel
        self.image_widget = new_image_widget(widgets)  # the curves
        # one control a row, so each slider keeps a usable track on a narrow window; the curves go
        # beside the pictures where there is room, else under them
        self.widget = widgets.VBox([
            style_widget(widgets), self.schedule_dropdown, self.steps_slider, self.timestep_slider,
            widgets.HBox([self.pictures.widget, self.image_widget], layout=widgets.Layout(flex_flow="row wrap")),
        ])
        self.schedule_dropdown.observe(self._on_change, names="value")
        self.steps_slider.observe(self._on_steps_change, names="value")
        self.timestep_slider.observe(self._on_change, names="value")
        self.redraw()

    # ---- state ----------------------------------------------------------------------------
    @property
    def schedule_name(self) -> str:
        return self.schedule_dropdown.value

    @property
    def num_train_timesteps(self) -> int:
        return int(self.steps_slider.value)

    @property
    def timestep(self) -> int:
        return int(self.timestep_slider.value)

    @property
    def state(self) -> tuple[str, int, int]:
        """(schedule, T, t) currently shown."""
        return self.schedule_name, self.num_train_timesteps, self.timestep

    def schedule_for(self, name: str, num_train_timesteps: int) -> NoiseSchedule:
        """The (cached) :class:`NoiseSchedule` of ``name`` with T = ``num_train_timesteps``."""
        key = (name, num_train_timesteps)
        if key not in self._schedules:
            self._schedules[key] = NoiseSchedule(
                name, num_train_timesteps, beta_start=self.beta_start, beta_end=self.beta_end
            )
        return self._schedules[key]

    # ---- events -----------------------------------------------------------------------------
    def _on_change(self, change=None) -> None:
        if not self._suspended:
            self.redraw()

    def _on_steps_change(self, change=None) -> None:
        # keep t inside [0, T - 1] without a second redraw from the t slider's own event
        self._suspended = True
        try:
            steps = self.num_train_timesteps
            if self.timestep_slider.value > steps - 1:
                self.timestep_slider.value = steps - 1
            self.timestep_slider.max = steps - 1
        finally:
            self._suspended = False
        self.redraw()

    # ---- drawing -----------------------------------------------------------------------------
    def redraw(self) -> None:
        """Recompute x_t for the current (schedule, T, t) and redraw the pictures and curves."""
        self.noise_schedule = self.schedule_for(self.schedule_name, self.num_train_timesteps)
        timesteps = torch.tensor([self.timestep])
        self.current_noisy_image = self.noise_schedule.add_noise(self.x0, self.noise, timesteps)[0]  # (3, H, W)
        pictures = as_uint8(torch.stack([self.x0[0], self.current_noisy_image]))
        self.pictures.show(pictures, ["x_0", f"x_t, t = {self.timestep}"])
        self.figure_png = show_png(self.image_widget, figure_to_png(self.figure()))

    def figure(self):
        """The current curves: ᾱ_t and log SNR over t, with the current t marked (the pictures are
        shown beside it, enlarged pixel for pixel)."""
        from matplotlib.figure import Figure

        schedule, steps, t = self.noise_schedule, self.num_train_timesteps, self.timestep
        alpha_bar = schedule.alphas_cumprod
        figure = Figure(figsize=(6.2, 2.5))  # about 560 x 230 px: fits beside the pictures, or under them
        axes = figure.subplots(1, 2)
        steps_axis = torch.arange(steps).numpy()
        axes[0].plot(steps_axis, alpha_bar.numpy(), color="tab:blue")
        axes[0].plot([t], [alpha_bar[t].item()], "o", color="tab:red")
        axes[0].set_title(f"ᾱ_t = {alpha_bar[t].item():.4f}", fontsize=9)
        axes[0].set_ylim(-0.02, 1.02)
        axes[1].plot(steps_axis, schedule.log_snr.numpy(), color="tab:green")
        axes[1].plot([t], [schedule.log_snr[t].item()], "o", color="tab:red")
        axes[1].set_title(f"log SNR = {schedule.log_snr[t].item():.2f}", fontsize=9)
        for axis in axes:
            axis.set_xlabel("t", fontsize=8)
            axis.grid(alpha=0.3)
            axis.tick_params(labelsize=7)
        figure.suptitle(f"{self.schedule_name} schedule, T = {steps}", fontsize=10)
        figure.tight_layout()
        return figure


# ---- sampling widgets ------------------------------------------------------------------------------
def _steps(config) -> int:
    """The sampling steps of one chunk of images under ``config`` (for a widget's step count)."""
    return int(config.sample.num_inference_steps)


def _names(labels) -> str:
    return ", ".join(labels)


def image_captions(images: torch.Tensor, label_lists, judge=None, label_space=None) -> list[str]:
    """One caption per image of ``images`` (float (B, 3, H, W)): its labels (``label_lists[i]``) and, with
    a ``judge``, how many of them the judge finds among its top-k classes (k = the number wanted)."""
    captions = [_names(labels) for labels in label_lists]
    if judge is None:
        return captions
    wanted = (label_space or LabelSpace.default()).encode(label_lists)  # (B, 24)
    selected, wanted, _ = top_k_selection(judge.probabilities(as_written(images)), wanted)  # the course's top-k rule
    for i, (hits, labels) in enumerate(zip((selected * wanted).sum(dim=1).int().tolist(), label_lists)):
        captions[i] += f"<br><span style='color: #666'>judge finds {hits}/{len(labels)}</span>"
    return captions


def accuracy_text(accuracy) -> str:
    """An AccuracyResult as a caption line: "accuracy 0.750 (6/8 objects, synthetic judge, held-out 0.991)"."""
    return "accuracy " + html.escape(str(accuracy).removeprefix("accuracy "))


class DenoisingStepper:
    """Step through one sampling run: x_t and the predicted x̂0 at each step.

    The trajectory is computed once (:meth:`from_model`, or pass a
    :class:`labkit.sample.SampleResult` made with ``return_trajectory=True``); the slider (and its
    play button, linked in the kernel) only index it. Step 0 is pure noise x_T; step N is the final image.

    State: ``step``, ``current_x_t`` and ``current_pred_x0`` (uint8 (3, H, W); x̂0 of the last
    network call at or before this step), ``image_png`` (what is shown, at its own pixel size:
    each image enlarged by an integer factor to about ``height`` pixels).
    """

    def __init__(self, result, title: str = "", image_index: int = 0, height: int = 160):
        import ipywidgets as widgets

        if result.trajectory is None or result.pred_x0 is None:
            raise ValueError("the stepper needs a trajectory: sample with return_trajectory=True")
        self.trajectory = result.trajectory[:, image_index]  # (N + 1, 3, H, W) uint8
        self.pred_x0 = result.pred_x0[:, image_index]  # (N, 3, H, W) uint8
        self.timesteps = list(result.timesteps)
        self.title = title
        self.height = height
        steps = len(self.timesteps)
        self.step_slider = widgets.IntSlider(
            value=0, min=0, max=steps, description="step", continuous_update=True, **control_layout(widgets)
        )
        self.play = widgets.Play(value=0, min=0, max=steps, step=1, interval=300, description="play")
        # linked in the kernel, not in the browser: Colab's widget manager has had jslink bugs
        self.link = widgets.link((self.play, "value"), (self.step_slider, "value"))
        self.caption = widgets.HTML()
        self.image_widget = new_image_widget(widgets)
        # the slider on its own row (a usable track on a narrow window), the play button beside the caption
        self.widget = widgets.VBox(
            [style_widget(widgets), self.step_slider, widgets.HBox([self.play, self.caption]), self.image_widget]
        )
        self.step_slider.observe(lambda change: self.show(), names="value")
        self.show()

    @classmethod
    def from_model(cls, model, schedule, label_list, config, seed: int = 0, label_space=None, progress: bool = True,
                   **sample_kwargs):
        """Sample ``label_list`` (e.g. ["red sphere", "cyan cube"]) once with a trajectory (a progress bar meanwhile)."""
        result = sample_conditions(
            model, schedule, [list(label_list)], config, label_space, seed=seed, return_trajectory=True,
            progress=progress, **sample_kwargs,
        )
        return cls(result, title=_names(label_list))

    @property
    def step(self) -> int:
        return int(self.step_slider.value)

    def show(self) -> None:
        """Show x_t and x̂0 at the slider's step."""
        step, steps = self.step, len(self.timesteps)
        self.current_x_t = self.trajectory[step]
        self.current_pred_x0 = self.pred_x0[min(step, steps - 1)] if step < steps else self.trajectory[-1]
        picture = side_by_side([enlarge(self.current_x_t, self.height), enlarge(self.current_pred_x0, self.height)])
        self.image_png = show_png(self.image_widget, picture_png(picture))
        where = "x_T (pure noise)" if step == 0 else ("x_0 (final image)" if step == steps else f"x_t at t = {self.timesteps[step]}")
        self.caption.value = (
            f"<b>{self.title}</b> &nbsp; step {step}/{steps}: left {where}, right the predicted x̂0"
        )


class GuidanceSlider:
    """The same seeds re-sampled at each classifier-free guidance scale w.

    ε = ε_u + w (ε_c − ε_u): w = 1 is the plain conditional model; larger w follows the labels
    harder. Each scale is sampled once, on first view, and cached; while a scale is being sampled
    the slider is disabled, the status line says so and the previous images are greyed. Each image
    is captioned with its labels (and, with a ``judge``, what the judge found); the course accuracy
    of the images (judge named) is shown above them.

    State: ``scale``, ``current_images`` (float (B, 3, H, W)), ``current_accuracy``
    (an AccuracyResult or None), ``cache`` (scale -> (images, accuracy)), ``status``.
    """

    def __init__(
        self,
        model,
        schedule,
        label_lists,
        config,
        scales=(1.0, 2.0, 3.0, 5.0, 7.0, 10.0),
        seed: int = 0,
        judge=None,
        label_space=None,
        initial_scale: float | None = None,
    ):
        import ipywidgets as widgets

        self.model, self.schedule, self.config, self.judge, self.seed = model, schedule, config, judge, seed
        self.label_space = label_space or LabelSpace.default()
        self.label_lists = [list(labels) for labels in label_lists]
        self.labels = self.label_space.encode(self.label_lists)
        self.cache: dict[float, tuple[torch.Tensor, object]] = {}
        scales = [float(scale) for scale in scales]
        initial = float(initial_scale) if initial_scale is not None else scales[0]
        self.scale_slider = widgets.SelectionSlider(
            options=scales, value=initial, description="w", continuous_update=False, **control_layout(widgets)
        )
        self.status = widgets.HTML()
        self.caption = widgets.HTML()
        self.tiles = ImageTiles()
        self.widget = widgets.VBox([style_widget(widgets), self.scale_slider, self.status, self.caption, self.tiles.widget])
        self.scale_slider.observe(lambda change: self.show(), names="value")
        self.show()

    @property
    def scale(self) -> float:
        return float(self.scale_slider.value)

    def images_at(self, scale: float, on_step=None):
        """(images, accuracy) at ``scale``, sampled once and cached (``on_step``: called after each step)."""
        if scale not in self.cache:
            result = sample_conditions(
                self.model, self.schedule, self.label_lists, self.config, self.label_space,
                guidance_scale=scale, seed=self.seed, progress=False, on_step=on_step,
            )
            accuracy = None
            if self.judge is not None:
                accuracy = self.judge.accuracy(as_written(result.images), self.labels)
            self.cache[scale] = (result.images, accuracy)
        return self.cache[scale]

    def show(self) -> None:
        scale = self.scale
        if scale not in self.cache:
            self.tiles.grey()
            try:
                with busy([self.scale_slider], self.status,
                           f"<i>sampling {len(self.label_lists)} images at w = {scale:g} …</i>", _steps(self.config)) as on_step:
                    self.images_at(scale, on_step)
            except Exception as error:
                self.status.value = f"<b>sampling at w = {scale:g} failed:</b> {type(error).__name__}: {html.escape(str(error))}"
                raise
        self.status.value = ""
        self.current_images, self.current_accuracy = self.cache[scale]
        text = (f"<b>guidance scale w = {scale:g}</b> (ε = ε_u + w(ε_c − ε_u)); "
                f"seeds {self.seed}…{self.seed + len(self.label_lists) - 1}")
        if self.current_accuracy is not None:
            text += f"<br>{accuracy_text(self.current_accuracy)}"
        self.caption.value = text
        self.tiles.show(self.current_images_uint8(), self.image_captions())

    def image_captions(self) -> list[str]:
        """Each image's labels; with a judge also the objects it found (top-k, k = the number wanted)."""
        return image_captions(self.current_images, self.label_lists, self.judge, self.label_space)

    def current_images_uint8(self) -> torch.Tensor:
        return as_uint8(self.current_images)


class LabelPicker:
    """Pick 1-3 of the 24 objects and generate scenes of them.

    Invalid picks (none, more than three, an unknown name) are refused with a message, the
    pictures of an earlier pick are removed and nothing is sampled. While scenes are sampled the
    button and the list are disabled and the button says so. State: ``picked`` (list of names),
    ``message``, ``current_images`` (float (B, 3, H, W) or None).
    """

    def __init__(self, model, schedule, config, label_space=None, num_images: int = 4, seed: int = 0, guidance_scale=None):
        import ipywidgets as widgets

        self.model, self.schedule, self.config = model, schedule, config
        self.label_space = label_space or LabelSpace.default()
        self.num_images, self.seed = num_images, seed
        self.guidance_scale = config.sample.guidance_scale if guidance_scale is None else guidance_scale
        self.selector = widgets.SelectMultiple(
            options=list(self.label_space.names), rows=10, description="objects",
            layout=widgets.Layout(width="320px"), style={"description_width": DESCRIPTION_WIDTH},
        )
        self.button = widgets.Button(description="generate", button_style="primary")
        self.message_widget = widgets.HTML()
        self.tiles = ImageTiles()
        self.widget = widgets.VBox(
            [style_widget(widgets), widgets.HBox([self.selector, self.button]), self.message_widget, self.tiles.widget]
        )
        self.picked: list[str] = []
        self.message = ""
        self.current_images = None
        self.button.on_click(lambda button: self.generate())
        self.selector.observe(lambda change: self.pick(list(change["new"])), names="value")
        self._say("pick 1 to 3 objects (ctrl/cmd-click for more than one), then press generate")

    def _say(self, text: str) -> None:
        self.message = text
        self.message_widget.value = text

    def pick(self, names) -> bool:
        """Check a pick; returns True when it can be generated (else the message says why)."""
        try:
            self.picked = self.label_space.check(list(names), where="your pick")
        except ConditionError as error:
            self.picked = []
            self.current_images = None
            self.tiles.clear()
            self._say(f"<b>refused:</b> {html.escape(str(error))}")
            return False
        self._say(f"ready: {_names(self.picked)} (press generate)")
        return True

    def generate(self):
        """Sample ``num_images`` scenes (seeds seed…seed+n−1) of the current pick."""
        if not self.picked and not self.pick(list(self.selector.value)):
            return None
        picked = list(self.picked)
        self.tiles.grey()
        description = self.button.description
        try:
            with busy([self.button, self.selector], self.message_widget,
                       f"<i>sampling {self.num_images} scenes of {_names(picked)} …</i>", _steps(self.config)) as on_step:
                self.button.description = "sampling…"
                result = sample_conditions(
                    self.model, self.schedule, [picked] * self.num_images, self.config, self.label_space,
                    guidance_scale=self.guidance_scale, seed=self.seed, progress=False, on_step=on_step,
                )
        except Exception as error:
            self.tiles.grey(False)
            self._say(f"<b>sampling failed:</b> {type(error).__name__}: {html.escape(str(error))}")
            raise
        finally:
            self.button.description = description
        self.current_images = result.images
        self.tiles.show(as_uint8(result.images), [f"{_names(picked)}<br>seed {self.seed + i}" for i in range(self.num_images)])
        self._say(f"{self.num_images} scenes of {_names(picked)} (w = {self.guidance_scale:g})")
        return result.images


class SamplerColumn:
    """One column of :class:`SamplerComparison`: its controls (sampler, steps, η), a caption and the pictures.

    η is enabled only while the sampler is DDIM (the others ignore it). Changing a control greys the
    pictures until the next run shows that setting. State: ``setting`` (what the controls say, a
    :class:`SamplerSetting`), ``shown`` (the :class:`ComparisonRow` on show, or None).
    """

    def __init__(self, widgets, setting: SamplerSetting, max_steps: int, tile_height: int = 128):
        def layout():  # one Layout per control
            return dict(layout=widgets.Layout(width="240px"), style={"description_width": "70px"})

        self.sampler_dropdown = widgets.Dropdown(
            options=list(SAMPLERS), value=setting.sampler, description="sampler", **layout()
        )
        steps = min(max(int(setting.num_inference_steps), 1), max_steps)
        self.steps_box = widgets.BoundedIntText(value=steps, min=1, max=max_steps, description="steps", **layout())
        self.eta_box = widgets.BoundedFloatText(
            value=setting.eta, min=0.0, max=1.0, step=0.1, description="η (DDIM)", **layout()
        )
        self.caption = widgets.HTML()
        self.tiles = ImageTiles(height=tile_height)
        self.shown = None
        self.widget = widgets.VBox(
            [self.sampler_dropdown, self.steps_box, self.eta_box, self.caption, self.tiles.widget],
            layout=widgets.Layout(width=f"{2 * (tile_height + 8) + 8}px", margin="0 16px 12px 0"),
        )
        for control in self.controls:
            control.observe(lambda change: self.on_change(), names="value")
        self.on_change()

    @property
    def controls(self) -> list:
        return [self.sampler_dropdown, self.steps_box, self.eta_box]

    @property
    def setting(self) -> SamplerSetting:
        sampler = self.sampler_dropdown.value
        eta = float(self.eta_box.value) if sampler == "ddim" else 0.0  # the others ignore η
        return SamplerSetting(sampler, int(self.steps_box.value), eta)

    def on_change(self) -> None:
        self.eta_box.disabled = self.sampler_dropdown.value != "ddim"
        if self.shown is not None:
            self.tiles.grey(self.shown.setting != self.setting)

    def show(self, row, captions: list[str]) -> None:
        """Show a :class:`ComparisonRow`: its setting, seconds per image, accuracy and pictures."""
        text = (f"<b>{html.escape(str(row.setting))}</b><br>{row.seconds_per_image:.3f} s per image, "
                f"{row.result.network_evaluations} network evaluations per image")
        if row.accuracy is not None:
            text += f"<br>{accuracy_text(row.accuracy)}"
        self.caption.value = f"<div style='font-size: 12px; line-height: 1.4'>{text}</div>"
        self.shown = row
        self.tiles.show(as_uint8(row.images), captions)
        self.on_change()


class SamplerComparison:
    """Samplers side by side: the same label sets and the same per-image seeds in every column, so the
    pictures differ only by each column's sampler, steps and η.

    Each column has its own controls; the shared *run* button samples every column whose setting has
    not been sampled yet (each setting is sampled once and cached) and shows its pictures, its seconds
    per image and, with a ``judge``, its accuracy (judge named). While it samples, the controls wait, the
    old pictures are greyed and a line counts the steps. A refused setting is explained on that line.

    Args:
        label_lists: the label sets (lists of names), one picture each in every column.
        settings: one :class:`SamplerSetting` per column (default :data:`DEFAULT_SETTINGS`: DDPM, DDIM
            η = 0 and DPM-Solver++, 20 steps each).
        seed: image i uses seed ``seed + i`` in every column (default 0).
        guidance_scale: w, the same for every column (default the config's).
        run_now: sample the first settings at once (default True); else wait for the button.

    State: ``columns`` (:class:`SamplerColumn`), ``rows`` (the :class:`ComparisonRow` of each column
    after a run), ``cache`` (setting -> row), ``status``, ``run_button``.
    """

    def __init__(self, model, schedule, label_lists, config, settings=DEFAULT_SETTINGS, seed: int = 0, judge=None,
                 label_space=None, guidance_scale: float | None = None, run_now: bool = True):
        import ipywidgets as widgets

        self.model, self.schedule, self.config, self.judge = model, schedule, config, judge
        self.label_space = label_space or LabelSpace.default()
        self.label_lists = [list(labels) for labels in label_lists]
        if not self.label_lists or not settings:
            raise ValueError("a comparison needs at least one label set and one setting")
        self.label_space.encode(self.label_lists)  # refuses unknown names now, not on the first run
        self.seeds = [seed + index for index in range(len(self.label_lists))]
        self.guidance_scale = config.sample.guidance_scale if guidance_scale is None else float(guidance_scale)
        self.cache: dict[SamplerSetting, object] = {}
        self.rows: list = []
        self.columns = [SamplerColumn(widgets, setting, schedule.num_train_timesteps) for setting in settings]
        self.run_button = widgets.Button(description="run", button_style="primary")
        self.status = widgets.HTML()
        self.caption = widgets.HTML(
            f"the same {len(self.label_lists)} label sets and seeds {self.seeds[0]}…{self.seeds[-1]} in every column; "
            f"w = {self.guidance_scale:g}"
        )
        columns = widgets.HBox([column.widget for column in self.columns],
                               layout=widgets.Layout(flex_flow="row wrap", align_items="flex-start"))
        self.widget = widgets.VBox(
            [style_widget(widgets), widgets.HBox([self.run_button, self.caption]), self.status, columns]
        )
        self.run_button.on_click(lambda button: self.run())
        if run_now:
            self.run()

    @property
    def controls(self) -> list:
        return [self.run_button] + [control for column in self.columns for control in column.controls]

    def run(self):
        """Sample the columns' settings not sampled yet and show every column; returns the rows
        (None when a setting is refused: the status line says why)."""
        steps_limit = self.schedule.num_train_timesteps
        try:
            settings = [check_setting(column.setting, self.config, steps_limit, where=f"column {index + 1}")
                        for index, column in enumerate(self.columns)]
        except ConfigError as error:
            self.status.value = f"<b>refused:</b> {html.escape(str(error))}"
            return None
        missing = [setting for setting in dict.fromkeys(settings) if setting not in self.cache]
        if missing:
            self.sample(missing, [column for column, setting in zip(self.columns, settings) if setting in missing])
        self.rows = [self.cache[setting] for setting in settings]
        for column, row in zip(self.columns, self.rows):
            column.show(row, image_captions(row.images, self.label_lists, self.judge, self.label_space))
        self.status.value = ""
        return self.rows

    def sample(self, settings: list[SamplerSetting], columns: list[SamplerColumn]) -> None:
        """Sample ``settings`` (checked, not cached yet) into the cache, greying ``columns`` meanwhile."""
        for column in columns:
            column.tiles.grey()
        count = len(self.label_lists)
        text = f"<i>sampling {count} images with {len(settings)} setting{'s' * (len(settings) > 1)} …</i>"
        steps = steps_of(settings, count, self.config.sample.batch_size)
        try:
            with busy(self.controls, self.status, text, steps) as on_step:
                rows = compare_samplers(
                    self.model, self.schedule, self.label_lists, self.config, settings, seeds=self.seeds,
                    judge=self.judge, label_space=self.label_space, guidance_scale=self.guidance_scale,
                    progress=False, on_step=on_step,
                )
        except Exception as error:
            for column in columns:
                column.tiles.grey(column.shown is not None and column.shown.setting != column.setting)
            self.status.value = f"<b>sampling failed:</b> {type(error).__name__}: {html.escape(str(error))}"
            raise
        self.cache.update(zip(settings, rows))
