"""The site team's description of its cameras: name, zone, store, and optionally a counting line.

Why a shared module: analysts roll flows up to zones and stores with it (loaded into ClickHouse
by `flowctl layout load`), and the processor reads the same file for each camera's counting
line (entries and exits by direction, as every retail people counter does), so one file
describes a camera for both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_ID = r"^[A-Za-z0-9._-]{1,64}$"


class LayoutError(ValueError):
    pass


class CountLine(BaseModel):
    """A line across the image, end points in fractions of width and height (0..1). Walking
    across it counts as ``in`` when the person ends up on the left of the line seen from ``a``
    towards ``b`` on the image, ``out`` the other way."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("line", pattern=_ID)
    a: tuple[float, float]
    b: tuple[float, float]

    @model_validator(mode="after")
    def _inside(self) -> "CountLine":
        if not all(0.0 <= v <= 1.0 for v in (*self.a, *self.b)):
            raise ValueError("count_line end points are fractions of the image: 0..1")
        if self.a == self.b:
            raise ValueError("count_line needs two different end points")
        return self


class CameraLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    camera_id: str = Field(pattern=_ID)
    name: str = ""
    zone: str = ""
    store: str = ""
    count_line: CountLine | None = None


class SiteLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site_id: str = Field(pattern=_ID)
    cameras: list[CameraLayout] = Field(min_length=1)


class Layout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sites: list[SiteLayout] = Field(min_length=1)


def read_layout(path: Path | str) -> Layout:
    p = Path(path)
    try:
        data: Any = yaml.safe_load(p.read_text(encoding="utf-8"))
        layout = Layout.model_validate(data)
    except OSError as e:
        raise LayoutError(f"{p}: cannot read layout file ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise LayoutError(f"{p}: not valid YAML ({e})") from e
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise LayoutError(f"{p}: {where}: {first['msg']} (expected sites: [{{site_id, cameras: [{{camera_id, "
                          f"name, zone, store, count_line}}]}}])") from e
    seen = set()
    for s in layout.sites:
        for c in s.cameras:
            if (s.site_id, c.camera_id) in seen:
                raise LayoutError(f"{p}: camera {s.site_id}/{c.camera_id} is listed twice")
            seen.add((s.site_id, c.camera_id))
    return layout




def count_lines(layout: Layout) -> dict[tuple[str, str], CountLine]:
    """(site_id, camera_id) -> its counting line, for the cameras that have one."""
    return {(s.site_id, c.camera_id): c.count_line for s in layout.sites for c in s.cameras if c.count_line}
