"""What the estimators need besides the occurrences: the camera layout and the privacy figures.

The layout file is the site team's own description of its cameras (name, zone, store), so
analysts can roll camera flows up to zones, stores and sites. The privacy figures are the
public part of a parameter set (same-group rate, group count, fictitious-person rate); the
seed and reference statistics never leave the processors.
"""
from __future__ import annotations

from pipeline.layout import Layout, LayoutError
from pipeline.privacy import PrivacyParams
from pipeline.sink.clickhouse import Warehouse

def load_layout(wh: Warehouse, layout: Layout) -> int:
    rows = [(s.site_id, c.camera_id, c.name, c.zone, c.store) for s in layout.sites for c in s.cameras]
    cols = ["site_id", "camera_id", "name", "zone", "store"]
    return wh.insert("cameras", cols, [list(col) for col in zip(*rows)]) or len(rows)


def camera_levels(wh: Warehouse, level: str) -> dict[str, str]:
    """camera key (site/camera) -> label at ``level`` (camera, zone, store or site)."""
    if level not in ("camera", "zone", "store", "site"):
        raise LayoutError(f"level must be camera, zone, store or site, not {level!r}")
    if level == "camera":
        return {}
    rows = wh.rows(f"SELECT site_id, camera_id, argMax(zone, loaded_at), argMax(store, loaded_at) "
                   f"FROM {wh.database}.cameras GROUP BY site_id, camera_id")
    out = {}
    for site, cam, zone, store in rows:
        label = zone if level == "zone" else store
        # a camera without a zone (store) stays on its own
        out[f"{site}/{cam}"] = site if level == "site" else f"{site}/{label or cam}"
    return out


def register_params(wh: Warehouse, params: PrivacyParams) -> None:
    cols = ["params_version", "n_groups", "same_group_rate", "fictitious_floor", "fictitious_ratio",
            "fictitious_per_group", "fictitious_variance_per_group"]
    row = [params.version, params.n_groups, float(params.same_group_rate), params.fictitious_floor,
           float(params.fictitious_ratio), float(params.fictitious_rate), float(params.fictitious_variance_per_group)]
    wh.insert("privacy_params", cols, [[v] for v in row])
