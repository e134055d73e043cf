"""Synthetic i-CLEVR: CLEVR-like scenes rendered by a small vectorised ray caster in torch.

Used when the official course images are absent. The layout written by :func:`render_dataset`
is the official one, so :mod:`labkit.data` reads both the same way.

Scene. Up to three objects stand on a floor plane z = 0 inside a 6 x 6 square: cubes, spheres
and cylinders (cubes and cylinders turned about the vertical axis), 8 CLEVR colors, two sizes,
rubber or metal. Objects never overlap, stay inside the frame, and each one stays at least about
half visible behind the others (checked on their projected bounding boxes).

Camera. A fixed pinhole camera 15 units away, raised and looking down 40 degrees, with a
36.5 degree horizontal field of view: objects are about 35-70 px tall at 320x240 (9-18 px at 64x64),
about 1.35 times the official renders, so that shapes stay legible through the 32x32 path that the
CPU profile and the judge see.
Every pixel's ray is cast analytically against each object: slabs for the cube, a sphere, an
infinite cylinder cut by two planes. The nearest hit wins; pixels without a hit see the floor.
Only screen windows are cast per object (its bounding box, its shadows, its contact shadow).

Shading (linear light, stored with gamma 2). Three point lights (key, fill, back) plus a sky
ambient term. The floor is gray Lambert with a faint sheen and ambient occlusion around each
object's footprint. Rubber is Lambert plus a weak broad highlight; metal reflects a gray-floor /
bright-sky environment tinted by its color and has a sharp highlight. Cube edges are slightly
rounded through their normals.

Shadows. Each light casts shadows on the floor and on the other objects: the shadow ray's chord
through an occluder is turned into a soft occlusion (a short chord, i.e. a grazing ray, shades
little), with a penumbra that widens with the distance to the occluder.

How it differs from the real renders: no global illumination or reflections of other objects,
no depth of field, no antialiasing at 320x240, fixed camera and lights.

Determinism. Only exactly rounded operations (+, -, *, /, sqrt, min, max, comparisons) touch
per-pixel values; no exp, pow or sums whose order could change with the batch or the thread
count. So a scene renders to the same bytes alone or in any batch, and a data set can be
extended later to the same files it would have had if rendered at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch

from labkit.images import encode_png, resize_square
from labkit.labels import COLORS, MAX_OBJECTS, SHAPES, LabelSpace
from labkit.runtime import atomic_write_text, show_progress

RENDERER_VERSION = "3"  # bump whenever the pixels of a scene change
WIDTH, HEIGHT = 320, 240
COLOR_RGB = {
    "gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
    "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208), "yellow": (255, 238, 51),
}
SIZES = {"small": 0.62, "large": 0.74}  # sphere radius; the other shapes are scaled to look as large
SHAPE_SCALE = {"cube": 0.68, "sphere": 1.0, "cylinder": 0.8}  # half side, radius (= half height), radius
MATERIALS = ("rubber", "metal")
AREA = 3.0  # objects stand in [-AREA, AREA]^2
MIN_GAP = 0.25  # floor distance between bounding circles
CAMERA_DISTANCE, CAMERA_PITCH, TAN_HALF_FOV = 15.0, math.radians(40.0), 0.33
CAMERA_TARGET = (0.0, 0.3, 0.0)
# (position, intensity, penumbra growth per unit distance)
LIGHTS = (((-7.0, -2.5, 8.0), 0.8, 0.12), ((7.0, -4.0, 7.0), 0.3, 0.2), ((1.5, 7.0, 9.0), 0.25, 0.2))
AMBIENT, FLOOR_ALBEDO = 0.16, 0.37
AO_REACH = 0.9  # ambient occlusion reaches this many object radii beyond the footprint
BIG = 1.0e4  # "no hit" distance


@dataclass(frozen=True)
class ObjectSpec:
    """One object. ``shape`` in SHAPES, ``color`` in COLORS, ``size`` "small" or "large",
    ``material`` "rubber" or "metal", ``position`` (x, y) on the floor (the camera looks along +y),
    ``rotation`` in radians about the vertical axis."""

    shape: str
    color: str
    size: str = "large"
    material: str = "rubber"
    position: tuple[float, float] = (0.0, 0.0)
    rotation: float = 0.0

    def __post_init__(self):
        for field, value, choices in (("shape", self.shape, SHAPES), ("color", self.color, COLORS),
                                      ("size", self.size, tuple(SIZES)), ("material", self.material, MATERIALS)):
            if value not in choices:
                raise ValueError(f"ObjectSpec {field} {value!r} is not one of {', '.join(choices)}")

    @property
    def name(self) -> str:
        """The course's label, e.g. ``"red cube"``."""
        return f"{self.color} {self.shape}"

    @property
    def radius(self) -> float:
        """Half height; also the sphere's radius, the cylinder's radius and the cube's half side."""
        return SIZES[self.size] * SHAPE_SCALE[self.shape]

    @property
    def reach(self) -> float:
        """Radius of the footprint's bounding circle."""
        return self.radius * (math.sqrt(2) if self.shape == "cube" else 1.0)


@dataclass(frozen=True)
class Scene:
    """Distinct objects (three from :func:`sample_scene`); image k of a scene shows its first k + 1."""

    objects: tuple[ObjectSpec, ...]

    @property
    def labels(self) -> list[str]:
        """The objects' names in order, e.g. ``["red cube", "blue sphere", "gray cylinder"]``."""
        return [item.name for item in self.objects]

    def prefixes(self) -> list[list[ObjectSpec]]:
        """The object lists of the scene's images: the first 1, 2, ... objects."""
        return [list(self.objects[: k + 1]) for k in range(len(self.objects))]


# ---- camera ------------------------------------------------------------------------------------------
def _camera():
    """Camera position and its right, up and forward unit vectors (floats)."""
    cos, sin = math.cos(CAMERA_PITCH), math.sin(CAMERA_PITCH)
    position = (0.0, CAMERA_TARGET[1] - CAMERA_DISTANCE * cos, CAMERA_DISTANCE * sin)
    return position, (1.0, 0.0, 0.0), (0.0, sin, cos), (0.0, cos, -sin)


def project(points: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """World points (x, y, z) -> screen (u, v): u in [-1, 1] left to right, v upwards (the 320x240
    frame spans v in [-0.75, 0.75])."""
    position, right, up, forward = _camera()
    screen = []
    for point in points:
        offset = [p - c for p, c in zip(point, position)]
        depth = sum(o * f for o, f in zip(offset, forward))
        screen.append(tuple(sum(o * a for o, a in zip(offset, axis)) / (depth * TAN_HALF_FOV) for axis in (right, up)))
    return screen


def _box_points(item: ObjectSpec, light=None, grow: float = 0.0) -> list[tuple[float, float, float]]:
    """Corners of an object's bounding box; with ``light``: their shadows on the floor; with ``grow``:
    the footprint widened by ``grow`` (the ambient-occlusion area)."""
    reach, top = item.reach + grow, 0.0 if grow else 2 * item.radius
    x, y = item.position
    corners = [(x + a * reach, y + b * reach, z) for a in (-1, 1) for b in (-1, 1) for z in (0.0, top)]
    if light is None:
        return corners
    return [tuple(l + (c - l) * light[2] / (light[2] - corner[2]) for c, l in zip(corner, light)) for corner in corners]


def _screen_box(item: ObjectSpec) -> tuple[float, float, float, float]:
    """Screen bounding box (u0, v0, u1, v1) of an object's bounding cylinder."""
    us, vs = zip(*project(_box_points(item)))
    return min(us), min(vs), max(us), max(vs)


# ---- scenes ------------------------------------------------------------------------------------------
def scene_generator(stream: str, seed: int, index: int) -> torch.Generator:
    """The generator of scene ``index`` in a named stream ("train", "holdout", ...): depends only on the three."""
    digest = hashlib.sha256(f"labkit-synth|{stream}|{seed}|{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _fits(candidate: ObjectSpec, placed: list[ObjectSpec], margin: float = 0.04) -> bool:
    """Whether ``candidate`` can join ``placed``: inside the frame (``margin`` in screen units), no
    floor overlap (bounding circles ``MIN_GAP`` apart), and no object's screen box more than 45%
    covered by the boxes of objects nearer to the camera."""
    u0, v0, u1, v1 = _screen_box(candidate)
    if u0 < -1 + margin or u1 > 1 - margin or v0 < -0.75 + margin or v1 > 0.75 - margin:
        return False
    boxes = [_screen_box(other) for other in placed] + [(u0, v0, u1, v1)]
    everyone = placed + [candidate]
    for item, (a0, b0, a1, b1) in zip(everyone, boxes):
        covered = 0.0  # screen area of item's box hidden by nearer objects' boxes
        for other, (c0, d0, c1, d1) in zip(everyone, boxes):
            if other is item:
                continue
            if math.dist(item.position, other.position) < item.reach + other.reach + MIN_GAP:
                return False
            if other.position[1] < item.position[1]:  # nearer to the camera
                covered += max(0.0, min(a1, c1) - max(a0, c0)) * max(0.0, min(b1, d1) - max(b0, d0))
        if covered > 0.45 * (a1 - a0) * (b1 - b0):
            return False
    return True


def sample_scene(generator: torch.Generator, num_objects: int = 3) -> Scene:
    """A random scene of ``num_objects`` distinct (color, shape) objects, drawn from ``generator``.

    Sizes and materials are uniform, rotations uniform in [0, 2 pi) (0 for spheres), positions
    uniform in the floor square, redrawn until the object fits (see module docstring).
    """
    draws: list[float] = []

    def uniform() -> float:
        if not draws:
            draws.extend(torch.rand(64, generator=generator, dtype=torch.float64).tolist())
        return draws.pop()

    while True:
        picks = torch.randperm(len(SHAPES) * len(COLORS), generator=generator)[:num_objects].tolist()
        placed: list[ObjectSpec] = []
        for index in picks:
            shape, color = SHAPES[index // len(COLORS)], COLORS[index % len(COLORS)]
            size = "large" if uniform() < 0.5 else "small"
            material = MATERIALS[int(uniform() * 2)]
            rotation = 0.0 if shape == "sphere" else uniform() * 2 * math.pi
            for _ in range(60):
                position = (AREA * (2 * uniform() - 1), AREA * (2 * uniform() - 1))
                candidate = ObjectSpec(shape, color, size, material, position, rotation)
                if _fits(candidate, placed):
                    placed.append(candidate)
                    break
            else:
                break  # no room: draw the whole scene again
        if len(placed) == num_objects:
            return Scene(tuple(placed))


# ---- ray casting -------------------------------------------------------------------------------------
def _miss_penalty(discriminant: torch.Tensor) -> torch.Tensor:
    return (discriminant * -1e6).clamp(0.0, 1.0) * BIG


def _sphere_interval(ox, oy, oz, dx, dy, dz, radius):
    """Entry/exit distances of unit rays (object frame) through a sphere resting on z = 0."""
    oz = oz - radius
    b = ox * dx + oy * dy + oz * dz
    discriminant = b * b - (ox * ox + oy * oy + oz * oz - radius * radius)
    root = discriminant.clamp(min=0.0).sqrt()
    return -b - root, -b + root - _miss_penalty(discriminant)


def _cube_interval(ox, oy, oz, dx, dy, dz, radius):
    near = far = None
    slabs = ((ox, dx, -radius, radius), (oy, dy, -radius, radius), (oz, dz, 0.0, 2 * radius))
    for origin, direction, low, high in slabs:
        inverse = 1.0 / direction
        t1, t2 = (low - origin) * inverse, (high - origin) * inverse
        lo, hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
        near, far = (lo, hi) if near is None else (torch.maximum(near, lo), torch.minimum(far, hi))
    return near, far


def _cylinder_interval(ox, oy, oz, dx, dy, dz, radius):
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    discriminant = b * b - a * (ox * ox + oy * oy - radius * radius)
    root = discriminant.clamp(min=0.0).sqrt()
    inverse = 1.0 / dz
    t1, t2 = -oz * inverse, (2 * radius - oz) * inverse
    near = torch.maximum((-b - root) / a, torch.minimum(t1, t2))
    far = torch.minimum((-b + root) / a, torch.maximum(t1, t2)) - _miss_penalty(discriminant)
    return near, far


INTERVALS = {"cube": _cube_interval, "sphere": _sphere_interval, "cylinder": _cylinder_interval}


def _to_object_frame(params, ox, oy, oz, dx, dy, dz):
    """World rays -> each object's frame (origin at its base centre, rotated by -rotation)."""
    cx, cy, cos, sin = params["x"], params["y"], params["cos"], params["sin"]
    px, py = ox - cx, oy - cy
    return px * cos + py * sin, py * cos - px * sin, oz, dx * cos + dy * sin, dy * cos - dx * sin, dz


def _interval(params, rays, shape: str):
    """(near, far) distances of world rays (ox, oy, oz, dx, dy, dz) through objects of one shape."""
    return INTERVALS[shape](*_to_object_frame(params, *rays), params["radius"])


def _by_shape(params, rays, compute):
    """``compute(params, rays, shape)`` on each shape's rows; rows run along dim 0 of every params
    tensor and of every tensor in ``rays`` (floats are shared). Returns the merged outputs."""
    outputs = None
    for index, name in enumerate(SHAPES):
        rows = (params["shape"].flatten() == index).nonzero().flatten()
        if len(rows):
            group = {key: value.index_select(0, rows) for key, value in params.items() if key != "albedo"}
            results = compute(group, [r.index_select(0, rows) if torch.is_tensor(r) else r for r in rays], name)
            if outputs is None:
                outputs = [torch.empty(len(params["shape"]), *value.shape[1:]) for value in results]
            for output, value in zip(outputs, results):
                output.index_copy_(0, rows, value)
    return outputs


def _intersect(params, rays):
    """(near, far) for rays against objects of any shapes."""
    return _by_shape(params, rays, _interval)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3) . (..., 3) -> (..., 1), written out so the sum order never depends on the batch."""
    return a[..., 0:1] * b[..., 0:1] + a[..., 1:2] * b[..., 1:2] + a[..., 2:3] * b[..., 2:3]


def _occlusion(near, far, penumbra):
    """Soft shadow from a shadow ray's chord: 0 (lit) .. 1 (fully blocked)."""
    chord = far - near.clamp(min=0.0)
    x = (chord / (0.02 + penumbra * near.clamp(min=0.0))).clamp(0.0, 1.0)
    return x * x * (3 - 2 * x)


def _object_params(objects: Sequence[ObjectSpec]) -> dict[str, torch.Tensor]:
    """Flat per-object tensors (n,); linear albedo (n, 3); plus one empty row at the end (far away)."""
    rows = list(objects) + [ObjectSpec("sphere", "gray", position=(0.0, 1.0e3))]
    column = lambda values: torch.tensor(values, dtype=torch.float32)  # noqa: E731
    return {
        "x": column([o.position[0] for o in rows]), "y": column([o.position[1] for o in rows]),
        "cos": column([math.cos(o.rotation) for o in rows]), "sin": column([math.sin(o.rotation) for o in rows]),
        "radius": column([o.radius for o in rows]), "metal": column([float(o.material == "metal") for o in rows]),
        "shape": torch.tensor([SHAPES.index(o.shape) for o in rows]),
        "albedo": column([[(c / 255) ** 2 for c in COLOR_RGB[o.color]] for o in rows]),
    }


@functools.lru_cache(maxsize=4)
def _view(width: int, height: int):
    """Per-pixel camera rays and floor lighting for one resolution (P = height * width pixels)."""
    position, right, up, forward = _camera()
    rows, columns = torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64)
    v, u = torch.meshgrid(rows, columns, indexing="ij")
    u = (2 * (u + 0.5) / width - 1) * TAN_HALF_FOV
    v = (1 - 2 * (v + 0.5) / height) * (height / width) * TAN_HALF_FOV
    direction = torch.stack([forward[i] + u * right[i] + v * up[i] for i in range(3)], -1).reshape(-1, 3)  # (P, 3)
    direction = direction / _dot(direction, direction).sqrt()
    floor = torch.tensor(position) + direction * (-position[2] / direction[:, 2:3])  # (P, 3), z = 0
    light_dirs, floor_light = [], []
    for light_position, intensity, _ in LIGHTS:
        to_light = torch.tensor(light_position) - floor  # (P, 3)
        distance_squared = _dot(to_light, to_light)[:, 0]
        to_light = to_light / distance_squared.sqrt()[:, None]
        falloff = intensity * sum(p * p for p in light_position) / distance_squared
        half_vector = to_light - direction
        sheen = (half_vector[:, 2] / _dot(half_vector, half_vector)[:, 0].sqrt()).clamp(min=0)
        sheen = sheen * sheen * sheen  # a broad sheen: cosine^24
        sheen = (sheen * sheen) * (sheen * sheen) * (sheen * sheen) * (sheen * sheen) * 0.12
        light_dirs.append(to_light.float())
        floor_light.append((falloff * (to_light[:, 2] * FLOOR_ALBEDO + sheen)).float())
    # ray and floor components are kept as contiguous (P,) rows: strided views are 10x slower to broadcast
    return {
        "camera": torch.tensor(position, dtype=torch.float32), "direction": direction.float(),
        "direction_rows": tuple(direction.float().T.contiguous()), "floor_rows": tuple(floor.float().T.contiguous()),
        "light_rows": [tuple(d.T.contiguous()) for d in light_dirs], "floor_light": floor_light,
        "floor_lit": AMBIENT * FLOOR_ALBEDO + sum(floor_light),  # (P,) the floor without objects
    }


def _take(row: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``row[index]`` for a 1-D row and an index of any shape (index_select is the fastest gather)."""
    return row.index_select(0, index.flatten()).view(index.shape)


def _windows(point_sets, width: int, height: int, pad: int = 2) -> torch.Tensor:
    """Flat pixel indices (n, h * w) of one h x w screen window per point set, each covering its points."""
    aspect, boxes = height / width, []
    for points in point_sets:
        us, vs = zip(*project(points))
        boxes.append(((min(us) + 1) / 2 * width, (aspect - max(vs)) / (2 * aspect) * height,
                      (max(us) + 1) / 2 * width, (aspect - min(vs)) / (2 * aspect) * height))
    w = min(width, max(math.ceil(c1) - math.floor(c0) for c0, _, c1, _ in boxes) + 2 * pad)
    h = min(height, max(math.ceil(r1) - math.floor(r0) for _, r0, _, r1 in boxes) + 2 * pad)
    starts = [min(max(math.floor(r0) - pad, 0), height - h) * width + min(max(math.floor(c0) - pad, 0), width - w)
              for c0, r0, _, _ in boxes]
    return torch.tensor(starts)[:, None] + (torch.arange(h)[:, None] * width + torch.arange(w)).flatten()


def _ambient_occlusion(group, rays, name):
    """Darkening of floor points near an object's footprint: 1 (none) .. 0.45."""
    x, y, _, _, _, _ = _to_object_frame(group, rays[0], rays[1], 0.0, 0.0, 0.0, 0.0)
    r = group["radius"]
    if name == "cube":  # distance to the square footprint
        dx, dy = x.abs() - r, y.abs() - r
        ex, ey = dx.clamp(min=0), dy.clamp(min=0)
        gap = (ex * ex + ey * ey).sqrt() + torch.maximum(dx, dy).clamp(max=0)
    else:  # distance to a disc (a sphere's shadowed contact area is smaller)
        gap = (x * x + y * y).sqrt() - r * (0.55 if name == "sphere" else 1.0)
    closeness = (1 - gap.clamp(min=0) / (AO_REACH * r)).clamp(min=0)
    return (1 - 0.55 * closeness * closeness,)


def _normal(params, hit, shape: str):
    """Unit normals (K, 3) at world points on objects of one shape; cube edges slightly rounded."""
    x, y, z, _, _, _ = _to_object_frame(params, *hit, 0.0, 0.0, 0.0)
    r = params["radius"]
    if shape == "sphere":
        local = torch.stack([x, y, z - r], -1)
    elif shape == "cube":  # the 15th power of the centred coordinates: flat faces, rounded edges
        centred = torch.stack([x, y, z - r], -1) / r[:, None]
        squared = centred * centred
        local = centred * squared * (squared * squared) * ((squared * squared) * (squared * squared))
    else:  # the top cap where the hit is closer to the top than to the side
        rim = (x * x + y * y).sqrt()
        top = ((2 * r - z) < (r - rim)).float()
        local = torch.stack([x * (1 - top), y * (1 - top), top * r], -1)
    local = local / _dot(local, local).sqrt()
    cos, sin = params["cos"], params["sin"]
    x, y, z = local.unbind(-1)
    return (torch.stack([x * cos - y * sin, x * sin + y * cos, z], -1),)


def _shade_objects(params, own, view, image_slots, pixel_image, pixel_index, pixel_object, t):
    """Linear RGB (K, 3) of the K object pixels: normals, lights, shadows from the other objects.
    ``own``: the parameters of each pixel's object; ``t`` (K,): distance from the camera."""
    direction = view["direction"].index_select(0, pixel_index)  # (K, 3)
    hit = view["camera"] + direction * t[:, None]
    normal = _by_shape(own, [hit[:, 0], hit[:, 1], hit[:, 2]], _normal)[0]  # (K, 3)
    facing = -_dot(normal, direction)
    reflected = direction + 2 * facing * normal
    origin = hit + normal * 1e-3
    albedo, metal = own["albedo"], own["metal"][:, None]
    up = reflected[:, 2:3]
    horizon = ((up + 0.03) / 0.1).clamp(0, 1)
    sky = 0.5 + 0.5 * up.clamp(0, 1)
    environment = 0.09 + (sky - 0.09) * horizon * horizon * (3 - 2 * horizon)  # dark floor below, bright sky above
    diffuse = AMBIENT * (0.35 + 0.65 * normal[:, 2:3]) * albedo * (1 - 0.85 * metal)
    specular = environment * (0.12 + 0.88 * albedo) * metal
    to_lights, distances_squared = [], []
    for light_position, _, _ in LIGHTS:
        to_light = torch.tensor(light_position) - hit  # (K, 3)
        distances_squared.append(_dot(to_light, to_light))
        to_lights.append(to_light / distances_squared[-1].sqrt())
    pixel, other = [], []  # (pixel, occluder) pairs: every other object of the pixel's image
    for slot in range(image_slots.shape[1]):
        candidate = image_slots[pixel_image, slot]  # (K,)
        chosen = ((candidate != pixel_object) & (candidate != len(params["x"]) - 1)).nonzero().flatten()
        pixel.append(chosen)
        other.append(candidate.index_select(0, chosen))
    pixel, other = torch.cat(pixel), torch.cat(other)  # (Q,)
    occluders = {key: value.index_select(0, other) for key, value in params.items()}
    origin = origin.index_select(0, pixel)
    visible = torch.ones(len(LIGHTS), len(t))  # (L, K): shadows cast by the image's other objects
    for light, (_, _, penumbra) in enumerate(LIGHTS if len(pixel) else ()):
        rays = (*origin.unbind(-1), *to_lights[light].index_select(0, pixel).unbind(-1))
        visible[light].scatter_reduce_(0, pixel, 1 - _occlusion(*_intersect(occluders, rays), penumbra), "prod")
    for light, (light_position, intensity, _) in enumerate(LIGHTS):
        to_light = to_lights[light]
        strength = intensity * sum(p * p for p in light_position) / distances_squared[light] * visible[light, :, None]
        lambert = _dot(normal, to_light).clamp(min=0)
        half_vector = to_light - direction
        glint = (_dot(normal, half_vector) / _dot(half_vector, half_vector).sqrt()).clamp(min=0)
        glint2 = glint * glint
        glint8 = (glint2 * glint2) * (glint2 * glint2)
        glint16 = glint8 * glint8
        glint64 = (glint16 * glint16) * (glint16 * glint16)
        diffuse = diffuse + strength * lambert * albedo * (1 - 0.85 * metal)
        specular = specular + strength * (0.08 * glint8 * (1 - metal) + 1.6 * glint64 * (0.3 + 0.7 * albedo) * metal)
    return diffuse + specular


def _render(objects: Sequence[ObjectSpec], image_objects: Sequence[Sequence[int]], width: int, height: int,
            with_ids: bool = False):
    """Render images made of the listed objects: uint8 (M, 3, H, W), and with ``with_ids`` the index
    of the object seen at each pixel (M, H, W) (-1: floor), else None.

    Per object, only screen windows are ray cast: its bounding box (camera rays), its shadow on
    the floor for each light, its ambient-occlusion area. Windows are merged into each image's
    maps with a minimum: depth (packed with the slot), light visibility, ambient occlusion.
    """
    view = _view(width, height)
    count, pixels, images = len(objects), width * height, len(image_objects)
    params = _object_params(objects)
    slots = max(1, max((len(ids) for ids in image_objects), default=1))
    image_slots = torch.full((images, slots), count)  # (M, S); count = the empty row
    pairs = [(m, s, o) for m, ids in enumerate(image_objects) for s, o in enumerate(ids)]
    nearest = torch.full((images * pixels,), 2**30, dtype=torch.int32)  # (M P,): depth * 256 * 4 + slot
    shadow = torch.zeros(len(LIGHTS), images * pixels)  # (L, M P) occlusion of each light
    ambient = torch.ones(images * pixels)  # (M P,) ambient occlusion factor
    if pairs:
        pair_image, pair_slot, pair_object = torch.tensor(pairs).T  # (Q,) each
        image_slots[pair_image, pair_slot] = pair_object
        columns = {key: value[:count, None] for key, value in params.items() if key != "albedo"}  # (n, 1) each

        def merge(target, window, values, reduce="amin", offset=0):  # values (n, h w) -> each image showing the object
            flat = (pair_image[:, None] * pixels + window.index_select(0, pair_object)).flatten()
            target.scatter_reduce_(0, flat, (values.index_select(0, pair_object) + offset).flatten(), reduce)

        window = _windows([_box_points(item) for item in objects], width, height)
        rays = [*view["camera"].tolist(), *(_take(row, window) for row in view["direction_rows"])]
        near, far = _intersect(columns, rays)
        depth = near + ((near - far) * 1e6).clamp(0.0, 1.0) * BIG  # (n, h w)
        merge(nearest, window, (depth * 256).int() * 4, offset=pair_slot[:, None].int())
        for light, (position, _, penumbra) in enumerate(LIGHTS):
            window = _windows([_box_points(item, light=position) for item in objects], width, height)
            rays = [_take(row, window) for row in (*view["floor_rows"], *view["light_rows"][light])]
            merge(shadow[light], window, _occlusion(*_intersect(columns, rays), penumbra), "amax")
        window = _windows([_box_points(item, grow=AO_REACH * item.radius) for item in objects], width, height)
        floor_points = [_take(row, window) for row in view["floor_rows"]]
        merge(ambient, window, _by_shape(columns, floor_points, _ambient_occlusion)[0])

    shadow = shadow.view(len(LIGHTS), images, pixels)  # in-place below: these maps are large
    floor = shadow[0].mul_(view["floor_light"][0])  # light lost to the shadows, summed: (M, P) linear
    for light in range(1, len(LIGHTS)):
        floor.add_(shadow[light].mul_(view["floor_light"][light]))
    floor.neg_().add_(view["floor_lit"]).mul_(ambient.view(images, pixels))
    gray = floor.clamp_(0, 1).sqrt_().mul_(255).round_().to(torch.uint8)  # gamma 2
    output = gray[:, None, :].repeat(1, 3, 1)  # (M, 3, P)
    object_ids = torch.full((images * pixels if with_ids else 0,), -1)
    hits = (nearest < int(BIG) * 512).nonzero().flatten()  # (K,) object pixels
    if len(hits):
        pixel_image, pixel_index = hits // pixels, hits % pixels
        pixel_object = image_slots[pixel_image, nearest[hits] % 4]
        own = {key: value.index_select(0, pixel_object) for key, value in params.items()}
        t, _ = _intersect(own, [*view["camera"].tolist(), *(_take(row, pixel_index) for row in view["direction_rows"])])
        rgb = _shade_objects(params, own, view, image_slots, pixel_image, pixel_index, pixel_object, t)
        output[pixel_image, :, pixel_index] = (rgb.clamp(0, 1).sqrt() * 255).round().to(torch.uint8)
        if with_ids:
            object_ids[hits] = pixel_object
    return output.view(images, 3, height, width), object_ids.view(images, height, width) if with_ids else None


def render_images(
    scenes: Sequence[Union[Scene, Sequence[ObjectSpec]]], width: int = WIDTH, height: int = HEIGHT, batch_size: int = 48
) -> torch.Tensor:
    """Render one image per entry (a :class:`Scene` or a list of 0-3 :class:`ObjectSpec`).

    Returns uint8 (N, 3, height, width); 320x240 by default (the official size).
    """
    lists = [list(entry.objects) if isinstance(entry, Scene) else list(entry) for entry in scenes]
    too_many = [i for i, entry in enumerate(lists) if len(entry) > MAX_OBJECTS]
    if too_many:
        count = len(lists[too_many[0]])
        raise ValueError(f"entry {too_many[0]} has {count} objects; an image shows at most {MAX_OBJECTS}")
    if not lists:
        return torch.zeros(0, 3, height, width, dtype=torch.uint8)
    chunks = []
    for start in range(0, len(lists), batch_size):
        batch = lists[start : start + batch_size]
        objects = [item for entry in batch for item in entry]
        offsets = [sum(len(entry) for entry in batch[:k]) for k in range(len(batch))]
        ids = [list(range(offset, offset + len(entry))) for offset, entry in zip(offsets, batch)]
        chunks.append(_render(objects, ids, width, height)[0])
    return torch.cat(chunks)


def render_scene_prefixes(scenes: Sequence[Scene], width: int = WIDTH, height: int = HEIGHT) -> torch.Tensor:
    """The official set's images of each scene: its first 1, 2, 3 objects. uint8 (3 N, 3, H, W), scene-major."""
    objects = [item for scene in scenes for item in scene.objects]
    ids, start = [], 0
    for scene in scenes:
        ids += [list(range(start, start + k + 1)) for k in range(len(scene.objects))]
        start += len(scene.objects)
    return _render(objects, ids, width, height)[0]


# ---- data sets ---------------------------------------------------------------------------------------
def _condition_lists(stream: str, seed: int, counts: dict[int, int]) -> list[list[str]]:
    """Label lists with ``counts[k]`` lists of k distinct objects, shuffled, from a seeded stream."""
    generator = scene_generator(stream, seed, 0)
    names = LabelSpace.default().names
    lists = [[names[i] for i in torch.randperm(len(names), generator=generator)[:k].tolist()]
             for k, number in sorted(counts.items()) for _ in range(number)]
    return [lists[i] for i in torch.randperm(len(lists), generator=generator).tolist()]


def _write_json(value, path: Path) -> None:
    atomic_write_text(json.dumps(value) + "\n", path)


def _render_and_write(scenes: Sequence[Scene], names: list[str], folder: Path) -> int:
    """Render the scenes' prefix images and write them as PNGs; returns the number of scenes."""

    for name, image in zip(names, render_scene_prefixes(scenes)):
        (folder / name).write_bytes(encode_png(image, compress_level=1))
    return len(scenes)


def _read_manifest(root: Path, seed: int) -> int:
    """Scenes already rendered in ``root`` (0 for a new folder); refuses folders it cannot extend."""
    manifest_path = root / "synthetic.json"
    if not manifest_path.exists():
        if (root / "iclevr").exists() or (root / "train.json").exists():
            raise FileExistsError(
                f"{root} holds i-CLEVR files but no synthetic.json, so labkit did not render them; move them "
                f"away, or set data.synthetic_dir to another folder (official files belong in data.root)"
            )
        return 0
    try:
        manifest = json.loads(manifest_path.read_text())
        found = (manifest["seed"], manifest["renderer_version"])
        done = int(manifest["num_scenes"])
    except (ValueError, KeyError, TypeError) as error:
        raise FileExistsError(
            f"{manifest_path} is damaged ({error!r}); delete {root} to render the synthetic set again"
        ) from error
    if found != (seed, RENDERER_VERSION):
        raise FileExistsError(
            f"{root} holds synthetic i-CLEVR of seed {found[0]}, renderer version {found[1]}, but seed {seed}, "
            f"version {RENDERER_VERSION} was asked for; rename or delete {root} to render it again, or set "
            f"data.synthetic_dir to another folder"
        )
    return done


def write_condition_files(root: Union[str, os.PathLike], seed: int = 0) -> Path:
    """Write ``objects.json``, ``test.json`` (6 single, 12 double, 14 triple lists: 72 objects) and
    ``new_test.json`` (12 double, 20 triple: 84 objects) of the synthetic set of ``seed`` into ``root``.

    They depend on ``seed`` alone, so sampling and scoring the test files need no rendered images.
    """
    root = Path(root)
    _write_json(LabelSpace.default().index, root / "objects.json")
    _write_json(_condition_lists("test", seed, {1: 6, 2: 12, 3: 14}), root / "test.json")
    _write_json(_condition_lists("new_test", seed, {2: 12, 3: 20}), root / "new_test.json")
    return root


def render_dataset(root: Union[str, os.PathLike], num_scenes: int, seed: int = 0, progress: bool = True,
                   batch_scenes: int = 16) -> Path:
    """Write (or extend) synthetic i-CLEVR at ``root`` in the official layout; returns ``root``.

    ``iclevr/CLEVR_train_{scene:06d}_{k}.png`` (320x240, k = 0, 1, 2: the first k + 1 objects),
    ``train.json`` (file name -> names in prefix order), ``objects.json`` (24 names -> index),
    ``test.json`` (6 single, 12 double, 14 triple lists: 72 objects) and ``new_test.json``
    (12 double, 20 triple: 84 objects), both fixed by ``seed`` alone, and ``synthetic.json``
    (seed, renderer version, scene count). Scene i depends only on (seed, i): a folder with fewer
    scenes is extended (only the missing ones are rendered); one with as many or more is left as
    it is. A folder of another seed or renderer version raises an error; nothing is ever deleted.
    Batches of ``batch_scenes`` scenes render and encode on one thread per CPU core (up to 8).
    """
    from tqdm.auto import tqdm

    root = Path(root)
    done = _read_manifest(root, seed)
    if done >= num_scenes:
        return root
    (root / "iclevr").mkdir(parents=True, exist_ok=True)
    write_condition_files(root, seed)
    scenes = [sample_scene(scene_generator("train", seed, i)) for i in range(num_scenes)]
    names = [[f"CLEVR_train_{i:06d}_{k}.png" for k in range(3)] for i in range(num_scenes)]
    bar = tqdm(total=num_scenes - done, desc=f"render synthetic i-CLEVR ({num_scenes} scenes)", unit="scene",
               disable=not show_progress(progress))
    threads, workers = torch.get_num_threads(), max(1, min(8, os.cpu_count() or 1))
    torch.set_num_threads(1)  # one batch per core: faster than threads inside each op, and robust on a busy machine
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: set = set()
            for start in range(done, num_scenes, batch_scenes):
                if len(pending) >= 2 * workers:  # bounded memory; result() raises a worker's error here
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    bar.update(sum(job.result() for job in finished))
                stop = min(num_scenes, start + batch_scenes)
                batch_names = sum(names[start:stop], [])
                pending.add(pool.submit(_render_and_write, scenes[start:stop], batch_names, root / "iclevr"))
            bar.update(sum(job.result() for job in pending))
    finally:
        torch.set_num_threads(threads)
    bar.close()
    labels = {name: scene.labels[: k + 1] for scene, row in zip(scenes, names) for k, name in enumerate(row)}
    _write_json(labels, root / "train.json")
    _write_json({"seed": seed, "renderer_version": RENDERER_VERSION, "num_scenes": num_scenes,
                 "image_size": [WIDTH, HEIGHT]}, root / "synthetic.json")
    return root


def render_holdout(num_scenes: int, seed: int = 1_000_003, image_size: int | None = None, progress: bool = False,
                   stream: str = "holdout", num_objects: int = 3) -> tuple[torch.Tensor, list[list[str]]]:
    """Extra scenes for a held-out test, drawn from their own ``stream`` (default "holdout"), so they differ
    from the training scenes of every seed. Returns uint8 (K N, 3, 240, 320), or (K N, 3, S, S) resized
    directly (squashed) to ``image_size`` = S, and each image's label list: the 1, 2, ..., K-object
    prefixes of each scene of K = ``num_objects`` objects, scene-major (N = ``num_scenes``).
    """
    from tqdm.auto import tqdm

    scenes = [sample_scene(scene_generator(stream, seed, i), num_objects) for i in range(num_scenes)]
    chunks = []
    for start in tqdm(range(0, num_scenes, 16), desc=f"render {stream} scenes", disable=not show_progress(progress)):
        images = render_scene_prefixes(scenes[start : start + 16])
        chunks.append(resize_square(images, image_size) if image_size else images)
    labels = [scene.labels[: k + 1] for scene in scenes for k in range(len(scene.objects))]
    empty = torch.zeros(0, 3, image_size or HEIGHT, image_size or WIDTH, dtype=torch.uint8)
    return (torch.cat(chunks) if chunks else empty), labels
