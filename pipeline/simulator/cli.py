"""``flowctl simulate run SCENARIO``: simulate, publish to ClickHouse or Kafka, keep the truth aside.

To ClickHouse, what analysts may read: the cells go through the flow aggregator in-process
(``settings.aggregator``) into ``flow_components`` / ``footfall_components``, and the exact
demographic counts through its demographics stage into ``demographic_components`` (noised
camera-hour cells), all with one release-noise key drawn for the run; the restricted per-window
cells and counts are not written. To Kafka, the cells and the exact demographic counts go to the
restricted occurrences and demographics topics, as processors send them.

Also runnable on its own: ``python -m pipeline.simulator.cli run reference``.
A thin wrapper around :func:`pipeline.simulator.simulate` and :mod:`pipeline.simulator.publish`.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["simulate_group"]

console = Console(stderr=True)
out = Console()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@click.group(name="simulate")
def simulate_group() -> None:
    """Simulated customer flows with ground truth (estimator evaluation, sink load tests)."""


@simulate_group.command("run")
@click.argument("scenario")
@click.option("--days", type=click.IntRange(1, 366), default=None, help="Override the scenario's number of days.")
@click.option("--mode", type=click.Choice(["fast", "core"]), default=None,
              help="Group assignment: fast (statistical) or core (descriptors through the real Anonymizer).")
@click.option("--to", "target", type=click.Choice(["clickhouse", "kafka", "none"]), default="clickhouse",
              show_default=True, help="Where the published rows go (none: simulate and write the truth only).")
@click.option("--database", default="flow_sim", show_default=True,
              help="ClickHouse database of the simulator's own (never the sink's).")
@click.option("--replace", is_flag=True, help="Drop the simulator database first if it holds rows.")
@click.option("--append", is_flag=True,
              help="Add to the rows already in the simulator database (published hours already there are replaced).")
@click.option("--truth", "truth_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the ground truth JSON here.")
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Privacy parameter set (default: PrivacyParams.default()).")
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option("--calibrate", is_flag=True,
              help="core mode: fit the parameter set to the simulated descriptor first (the default set is uncalibrated).")
def run(scenario: str, days: int | None, mode: str | None, target: str, database: str, replace: bool, append: bool,
        truth_path: Path | None, params_path: Path | None, seed: int | None, calibrate: bool) -> None:
    """Simulate SCENARIO (a YAML path, or a shipped name: reference, small) and publish it."""
    import numpy as np

    from pipeline.aggregator.model import SpecError
    from pipeline.privacy import ParamsError, PrivacyParams
    from pipeline.settings import ConfigError, load_settings
    from pipeline.simulator import simulate
    from pipeline.simulator.publish import (SimulatorError, prepare_database, produce_kafka, publish_components,
                                            publish_demographics, register_dimensions, write_clickhouse)
    from pipeline.simulator.scenario import ScenarioError, load_scenario

    if replace and append:
        raise click.UsageError("--replace and --append exclude each other")
    try:
        sc = load_scenario(scenario).with_overrides(days=days, group_mode=mode, seed=seed)
        params = PrivacyParams.load(params_path) if params_path else PrivacyParams.default()
        settings = load_settings()
    except (ScenarioError, ParamsError, ConfigError) as e:
        raise click.ClickException(str(e)) from None

    t_all = time.monotonic()
    wh = None
    try:
        if target == "clickhouse":  # fail before simulating if the database is not acceptable
            wh = prepare_database(settings, database, replace=replace, append=append)
        with _progress() as prog:
            tasks: dict[str, int] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = prog.add_task(f"simulate: {stage}", total=total)
                prog.update(tasks[stage], completed=min(done, total), total=total)

            sim = simulate(sc, params, np.random.default_rng(sc.seed), calibrate=calibrate, progress=progress)
            for tid in tasks.values():
                prog.update(tid, completed=prog.tasks[tid].total)
            pub, truth, st = sim.published, sim.truth, sim.stats
            written: dict[str, int] = {}
            t_out = time.monotonic()
            rate = None
            if target == "clickhouse":
                agg = prog.add_task(f"aggregate {pub.occurrence_rows} cells, {pub.demographic_rows} demographic "
                                    "counts", total=2)
                # A simulated site has no deployment key; the noise must still be unpredictable.
                noise_key = secrets.token_bytes(32)
                flow, foot = publish_components(pub, settings.aggregator.spec(), noise_key=noise_key)
                prog.advance(agg)
                dem = publish_demographics(pub, settings.aggregator.counts_spec(
                    "demographics", pub.demographics_window_seconds), noise_key=noise_key)
                prog.advance(agg)
                ptasks = {t: prog.add_task(f"insert {database}.{t}", total=n) for t, n in (
                    ("flow_components", len(flow)), ("footfall_components", len(foot)),
                    ("demographic_components", len(dem)))}
                written = write_clickhouse(pub, wh, components=(flow, foot), demographics=dem,
                                           progress=lambda t, n: prog.advance(ptasks[t], n))
                register_dimensions(wh, sc, sim.params)
            elif target == "kafka":
                ktasks = {"GroupOccurrence": prog.add_task(f"produce {settings.kafka.occurrences_topic}",
                                                           total=pub.occurrence_rows),
                          "DemographicCount": prog.add_task(f"produce {settings.kafka.demographics_topic}",
                                                            total=pub.demographic_rows)}
                ks = produce_kafka(pub, settings, progress=lambda t, n: prog.advance(ktasks[t], n))
                written = dict(ks.records)
                rate = ks.records_per_second
            out_secs = time.monotonic() - t_out
    except (SimulatorError, SpecError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        if wh is not None:
            wh.close()

    if truth_path:
        truth.notes.update({"fictitious_added": pub.fictitious_added,
                            "fictitious_per_camera": dict(zip(pub.camera_ids, pub.fictitious_per_camera.tolist())),
                            "occurrence_rows": pub.occurrence_rows, "demographic_rows": pub.demographic_rows})
        truth.save(truth_path)

    t = Table("camera", "site", "captures/day", "captures", "fictitious", "published occurrences",
              title=f"{sc.name}: {sc.days} day(s) from {sc.start}, mode {st.mode}, params {pub.params_version}")
    occ = pub.occurrences_per_camera()
    for i, c in enumerate(pub.camera_ids):
        t.add_row(c, truth.camera_site[i], f"{st.captures_per_camera_day[c]:.0f}", str(int(pub.real_per_camera[i])),
                  str(int(pub.fictitious_per_camera[i])), str(occ[c]))
    out.print(t)
    sg = st.same_group
    lines = [
        f"persons {st.persons}, camera passes {st.visits}, captures {st.captures}",
        f"same-group rate achieved {sg.all_pairs:.3f} over {sg.all_pairs_n} same-person capture pairs "
        f"(consecutive {sg.consecutive:.3f}); target params.same_group_rate {st.target_same_group_rate:.3f}"
        + (f"; fast home-group probability {st.fast_home_probability:.3f}" if st.fast_home_probability else ""),
        f"processors emitted: {pub.occurrence_rows} occurrence cells (restricted; {pub.fictitious_added} fictitious "
        f"occurrences drawn with floor {params.fictitious_floor}, ratio {params.fictitious_ratio:g}), "
        f"{pub.demographic_rows} exact demographic counts (restricted)",
        "timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in st.seconds.items()),
    ]
    if target == "clickhouse":
        lines.append(f"wrote {sum(written.values())} rows to {database} " + str(written) + f" in {out_secs:.1f} s")
    elif target == "kafka":
        lines.append(f"produced {sum(written.values())} records {written} in {out_secs:.1f} s: {rate:,.0f} records/s")
    if truth_path:
        lines.append(f"ground truth: {truth_path}")
    lines.append(f"total {time.monotonic() - t_all:.1f} s")
    for line in lines:
        out.print(line)


if __name__ == "__main__":
    simulate_group(prog_name="simulate")
