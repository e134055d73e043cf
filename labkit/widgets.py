"""Interactive notebook widgets (ipywidgets 7.7 and 8: only APIs both versions have).

Each widget is a small class holding its ipywidgets container in ``.widget`` (display it by
ending a cell with ``explorer.widget``) and its current state in plain attributes, so code
and tests can drive it by setting a control's ``.value`` and read what it shows.
"""

from __future__ import annotations

import io

import torch

from labkit.schedules import SCHEDULES, NoiseSchedule


def _to_model_range(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) in [0, 255] or float (3, H, W) in [-1, 1] -> float32 (3, H, W) in [-1, 1]."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one image of shape (3, H, W), got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 127.5 - 1.0
    return image.detach().float().cpu()


def _figure_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


class ScheduleExplorer:
    """Explore the forward process q(x_t | x_0) of each β schedule on one image.

    Controls: a Dropdown for the schedule, an IntSlider for T (``num_train_timesteps``) and an
    IntSlider for t. Every change redraws x_t next to the ᾱ_t and log-SNR curves with the
    current t marked. The noise ε is drawn once from ``seed``, so a redraw is deterministic:
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
    ``current_noisy_image`` (3, H, W) float, ``figure_png`` (the last drawing as PNG bytes).
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

        self.schedule_dropdown = widgets.Dropdown(options=list(schedules), value=schedule, description="schedule")
        self.steps_slider = widgets.IntSlider(
            value=num_train_timesteps,
            min=min_timesteps,
            max=max_timesteps,
            step=timesteps_step,
            description="T",
            continuous_update=False,
        )
        self.timestep_slider = widgets.IntSlider(
            value=min(timestep, num_train_timesteps - 1),
            min=0,
            max=num_train_timesteps - 1,
            description="t",
            continuous_update=False,
        )
        self.image_widget = widgets.Image(format="png")
        self.widget = widgets.VBox(
            [widgets.HBox([self.schedule_dropdown, self.steps_slider, self.timestep_slider]), self.image_widget]
        )
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
        """Recompute x_t for the current (schedule, T, t) and redraw the figure."""
        self.noise_schedule = self.schedule_for(self.schedule_name, self.num_train_timesteps)
        timesteps = torch.tensor([self.timestep])
        self.current_noisy_image = self.noise_schedule.add_noise(self.x0, self.noise, timesteps)[0]  # (3, H, W)
        self.figure_png = _figure_png(self.figure())
        self.image_widget.value = self.figure_png

    def figure(self):
        """The current drawing: x_0, x_t, and the ᾱ_t and log-SNR curves with t marked."""
        from matplotlib.figure import Figure

        from labkit.figures import as_uint8

        schedule, steps, t = self.noise_schedule, self.num_train_timesteps, self.timestep
        alpha_bar = schedule.alphas_cumprod
        figure = Figure(figsize=(11, 2.6))
        axes = figure.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1.6, 1.6]})
        for axis, picture, title in (
            (axes[0], self.x0[0], "x_0"),
            (axes[1], self.current_noisy_image, f"x_t, t = {t}"),
        ):
            axis.imshow(as_uint8(picture[None])[0].permute(1, 2, 0).numpy(), interpolation="nearest")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
        steps_axis = torch.arange(steps).numpy()
        axes[2].plot(steps_axis, alpha_bar.numpy(), color="tab:blue")
        axes[2].plot([t], [alpha_bar[t].item()], "o", color="tab:red")
        axes[2].set_title(f"ᾱ_t = {alpha_bar[t].item():.4f}", fontsize=9)
        axes[2].set_xlabel("t", fontsize=8)
        axes[2].set_ylim(-0.02, 1.02)
        axes[3].plot(steps_axis, schedule.log_snr.numpy(), color="tab:green")
        axes[3].plot([t], [schedule.log_snr[t].item()], "o", color="tab:red")
        axes[3].set_title(f"log SNR = {schedule.log_snr[t].item():.2f}", fontsize=9)
        axes[3].set_xlabel("t", fontsize=8)
        for axis in axes[2:]:
            axis.grid(alpha=0.3)
            axis.tick_params(labelsize=7)
        figure.suptitle(f"{self.schedule_name} schedule, T = {steps}", fontsize=10)
        figure.tight_layout()
        return figure
