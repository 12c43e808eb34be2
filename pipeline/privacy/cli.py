"""``flowctl privacy ...``: calibrate a parameter set, show one, run the evaluation.

Also runnable on its own: ``python -m pipeline.privacy.cli eval``.
Why a click group: the main CLI mounts it as a sub-command; the commands are
thin wrappers around the library (calibration, evaluation), so the same code
runs from tests and notebooks.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import click
import numpy as np

from pipeline.privacy.params import PROFILES, ParamsError, PrivacyParams
from pipeline.privacy.quantizer import QUANTIZER_METHODS

__all__ = ["privacy"]

log = logging.getLogger(__name__)


@click.group(name="privacy")
def privacy() -> None:
    """Privacy core: parameter sets (calibrate, show) and the privacy evaluation (eval)."""


def _load_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    missing = [k for k in required if k not in data]
    if missing:
        raise click.BadParameter(f"{path} lacks array(s) {', '.join(missing)} (has: {', '.join(sorted(data)) or 'none'})")
    return data


def _load_embeddings(path: Path) -> np.ndarray:
    """Unlabelled embeddings from a .npy array or an .npz with an 'embeddings' array."""
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        arr = _load_npz(path, ("embeddings",))["embeddings"]
    if arr.ndim != 2:
        raise click.BadParameter(f"{path}: embeddings must be a 2-D array (n, D), got shape {arr.shape}")
    return arr


@privacy.command()
@click.option("--embeddings", "emb_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="NPZ with 'embeddings' (n, D) of many different people (or a .npy of them); optional 'strata' (n,) of "
                   "demographic guesses (e.g. female/male) to keep group ids from revealing them.")
@click.option("--pairs", "pairs_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="NPZ of measured pairs: 'same_a', 'same_b' (n, D), the same person at two cameras; optional "
                   "'diff_a', 'diff_b' (different people, for the report) and 'same_a_strata', 'same_b_strata'.")
@click.option("--version", required=True, help="Version string recorded with every output record, e.g. pp-2026.12-siteA.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the parameter JSON.")
@click.option("--target-rate", default=0.5, show_default=True, help="Re-capture same-group rate to aim for.")
@click.option("--linkage-prior", default=0.2, show_default=True,
              help="Adversary's prior that a person was at a camera in a window.")
@click.option("--max-posterior", default=1 / 3, show_default=True, help="Posterior the adversary may reach at most.")
@click.option("--assumed-similarity", default=0.85, show_default=True,
              help="Without --pairs: assumed same-person cosine similarity of whitened descriptors.")
@click.option("--dims", type=int, default=None, help="Keep this many stable directions (default: measured best).")
@click.option("--seed", type=int, default=None, help="Deployment seed (default: fresh secret seed = rotation).")
@click.option("--quantizer", type=click.Choice(("hash",) + QUANTIZER_METHODS), default="hash", show_default=True,
              help="Grouping: 'hash' (seeded random directions) or a learned codebook fitted on unlabelled "
                   "embeddings; 'kmeans-balanced' is the measured best (docs/PRIVACY.md, 'Learned quantizer').")
@click.option("--quantizer-embeddings", "q_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Unlabelled embeddings (.npy, or .npz with 'embeddings') to fit the quantizer on "
                   "(default: --embeddings). Tens of thousands of passes for 1,000 groups.")
@click.option("--quantizer-dims", type=int, default=None,
              help="Principal components the learned quantizer works in (default 64).")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="flow", show_default=True,
              help="Fictitious persons: 'flow' (about one per camera-window; flows stay estimable) or 'strict' "
                   "(floor 2 + the ratio the linkage target implies, in every group; flows become unmeasurable).")
@click.option("--footage", "footage", multiple=True, metavar="CAMERA=PATH",
              help="The site's own recorded footage of one camera (repeat per camera): passes are found with the "
                   "processor's perception; their embeddings fit the quantizer and reference, halves of each pass "
                   "give within-camera same-person pairs. Kept in memory only.")
@click.option("--walkthrough", "walk_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --footage: a staff walk-through schedule (pipeline/privacy/walkthrough.py); its matched "
                   "passes give the cross-camera pairs p is measured and registered on.")
def calibrate(emb_path: Path | None, pairs_path: Path | None, version: str, out_path: Path, target_rate: float,
              linkage_prior: float, max_posterior: float, assumed_similarity: float, dims: int | None,
              seed: int | None, quantizer: str, q_path: Path | None, quantizer_dims: int | None,
              profile: str, footage: tuple[str, ...], walk_path: Path | None) -> None:
    """Choose noise scale, hash balancing and fictitious-person ratio for the targets; write a parameter set.

    Every run draws a fresh secret seed unless --seed is given, so running it
    again with a new --version is how parameters are rotated.
    """
    from pipeline.privacy.calibration import calibrate as run_calibration

    if emb_path is None and pairs_path is None and not footage:
        raise click.UsageError("give --footage, --embeddings, --pairs or a combination")
    if walk_path is not None and not footage:
        raise click.UsageError("--walkthrough needs --footage of the cameras it names")
    pairs = strata = pair_strata = diff = None
    within = None
    if footage:
        emb_from_footage, within, cross = _from_footage(footage, walk_path)
        if cross is not None and len(cross[0]):
            pairs = cross
        elif within is not None and len(within[0]):
            click.echo("warning: no cross-camera pairs (no --walkthrough or nothing matched); measuring p on "
                       "within-camera pass halves, which overstates p across cameras", err=True)
            pairs = within
    if pairs_path is not None:
        pz = _load_npz(pairs_path, ("same_a", "same_b"))
        pairs = (pz["same_a"], pz["same_b"])
        if "same_a_strata" in pz and "same_b_strata" in pz:
            pair_strata = (pz["same_a_strata"].astype(str), pz["same_b_strata"].astype(str))
        if "diff_a" in pz and "diff_b" in pz:
            diff = (pz["diff_a"], pz["diff_b"])
    if emb_path is not None and emb_path.suffix == ".npy":
        emb = _load_embeddings(emb_path)
    elif emb_path is not None:
        ez = _load_npz(emb_path, ("embeddings",))
        emb = ez["embeddings"]
        strata = ez["strata"].astype(str) if "strata" in ez else None
    elif footage:
        emb = emb_from_footage
    else:
        click.echo("warning: no --embeddings; using the pair descriptors as population sample", err=True)
        emb = np.concatenate(pairs)
    q_emb = None
    if q_path is not None:
        if quantizer == "hash":
            raise click.UsageError("--quantizer-embeddings needs --quantizer (a learned method)")
        q_emb = _load_embeddings(q_path)
    try:
        res = run_calibration(emb, version=version, pairs=pairs, strata_labels=strata, pair_strata=pair_strata,
                              target_rate=target_rate, linkage_prior=linkage_prior, max_posterior=max_posterior,
                              assumed_similarity=assumed_similarity, dims=dims, seed=seed,
                              base=PrivacyParams.profile(profile),
                              fictitious_ratio=PROFILES[profile]["fictitious_ratio"] if profile == "flow" else None,
                              quantizer=quantizer, quantizer_embeddings=q_emb, quantizer_dims=quantizer_dims)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    res.params.save(out_path)
    p = res.params
    click.echo(f"wrote {out_path}: version {p.version}")
    if footage:
        from pipeline.privacy.anonymizer import Anonymizer

        anon = Anonymizer(p, emb.shape[1])
        for what, pr in (("within cameras (pass halves)", within), ("across cameras (walk-through)", pairs
                                                                     if pairs is not within else None)):
            if pr is not None and len(pr[0]):
                rate = float(np.mean(anon.assign_groups(pr[0]) == anon.assign_groups(pr[1])))
                click.echo(f"  same-group rate {what}: {rate:.3f} over {len(pr[0])} pairs (with noise)")
    click.echo(f"  reduced dims {p.reference.reduced_dim if p.reference else '-'}; strata {list(p.strata) or 'none'}")
    click.echo(f"  noise_scale {p.noise_scale:.6f}; same-group rate {p.same_group_rate:.3f} "
               f"(without noise {res.rate_without_noise:.3f}); target {target_rate:.2f}: "
               f"{'met' if res.target_met else 'NOT met'}")
    c = p.calibration
    click.echo(f"  grouping: {c.get('quantizer', 'hash')}"
               + (f" ({c['quantizer_space']}, {c['quantizer_samples']} embeddings, {c['quantizer_iterations']} "
                  f"iterations, {c['quantizer_fit_seconds']} s)" if "quantizer_space" in c else ""))
    click.echo(f"  groups fill {c['fill_min_over_mean']:.2f}x-{c['fill_max_over_mean']:.2f}x the mean; effective "
               f"groups {c['effective_groups_simpson']:.0f} (1/sum share^2), {c['effective_groups_entropy']:.0f} "
               f"(exp entropy) of {p.n_groups}, on the calibration sample")
    click.echo(f"  fictitious: floor {p.fictitious_floor} + geometric ratio {p.fictitious_ratio:.3f} "
               f"= {p.fictitious_rate:.2f} per group per window; linkage LR bound {p.linkage_likelihood_ratio_bound:.2f}")
    if diff is not None:
        from pipeline.privacy.anonymizer import Anonymizer

        anon = Anonymizer(p, diff[0].shape[1])
        rate = float(np.mean(anon.assign_groups(diff[0]) == anon.assign_groups(diff[1])))
        click.echo(f"  different-person same-group rate {rate:.4f} (1/n_groups = {1 / p.n_groups:.4f})")


def _from_footage(footage: tuple[str, ...], walk_path: Path | None):
    """Pass embeddings (n, D), within-camera pairs and walk-through pairs from recorded footage,
    found with the processor's configured perception. In memory only: these are personal data."""
    import cv2

    from pipeline.edge.sources import SourceError, open_source
    from pipeline.privacy.walkthrough import load_schedule, match_walkthrough
    from pipeline.settings import load_settings
    from pipeline.vision.factory import descriptor_for, detector_for
    from pipeline.vision.footage import collect_passes
    from pipeline.vision.tracker import TrackerConfig

    s = load_settings()
    ps, edge = s.processor, s.edge
    cams: dict[str, Path] = {}
    for spec in footage:
        cam, sep, path = spec.partition("=")
        if not sep or not cam or not path:
            raise click.BadParameter(f"{spec!r}: expected CAMERA=PATH", param_hint="--footage")
        if cam in cams:
            raise click.BadParameter(f"camera {cam!r} given twice", param_hint="--footage")
        if not Path(path).is_file():
            raise click.BadParameter(f"{path}: no such file", param_hint="--footage")
        cams[cam] = Path(path)
    schedule = None
    if walk_path is not None:
        try:
            schedule = load_schedule(walk_path)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--walkthrough") from None
    detect, (embed, _) = detector_for(ps), descriptor_for(ps.descriptor)
    cfg = TrackerConfig(high_score=ps.track_high_score, low_score=min(ps.track_low_score, ps.track_high_score),
                        max_gap_s=ps.pass_max_gap_seconds, min_hits=ps.pass_min_hits,
                        app_gate=ps.track_appearance_gate)

    def edge_like(path: Path):
        # as the edge sends frames: its rate, its size, JPEG at its quality
        for f in open_source(str(path), edge.sample_fps, edge.max_width, edge.max_height):
            _, buf = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, edge.jpeg_quality])
            yield f.offset_seconds, cv2.imdecode(buf, cv2.IMREAD_COLOR)

    passes = []
    try:
        for cam, path in cams.items():
            got = collect_passes(edge_like(path), cam, detect.detect, embed, cfg)
            click.echo(f"  {cam}: {len(got)} passes in {path.name}", err=True)
            passes += got
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    if not passes:
        raise click.ClickException("no person passes found in the footage: nothing to calibrate on")
    emb = np.stack([p.mean for p in passes])
    halves = [p.halves for p in passes if p.halves is not None]
    within = (np.stack([a for a, _ in halves]), np.stack([b for _, b in halves])) if halves else None
    cross = None
    if schedule is not None:
        m = match_walkthrough(schedule, [(p.camera, p.start_s, p.end_s) for p in passes])
        for why in m.unmatched:
            click.echo(f"  walk-through: skipped {why}", err=True)
        click.echo(f"  walk-through: {m.matched} sightings matched, {len(m.pairs)} cross-camera pairs", err=True)
        if m.pairs:
            cross = (np.stack([passes[i].mean for i, _ in m.pairs]), np.stack([passes[j].mean for _, j in m.pairs]))
    return emb, within, cross


@privacy.command()
@click.pass_context
def rotate(ctx: click.Context) -> None:
    """New secret seed and version for the deployment's parameter set (beside the processor key).

    Groups before and after are unrelated, so flows are estimated per version; restart the
    processors to use it and register it with `flowctl migrate` or `flowctl params register`."""
    from pipeline.cli import _settings
    from pipeline.privacy.deployment import rotate_deployment_params

    try:
        old, new = rotate_deployment_params(_settings(ctx).keys.dir)
    except ParamsError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"rotated {old.version} -> {new.version}; restart the processors and register the new version")


@privacy.command()
@click.argument("params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def show(params_path: Path) -> None:
    """Print a parameter set's settings (not its arrays)."""
    try:
        p = PrivacyParams.load(params_path)
    except ParamsError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"version {p.version} (schema {p.schema_version})")
    click.echo(f"groups {p.n_groups}, working dim {p.working_dim}, noise_scale {p.noise_scale}")
    click.echo(f"same_group_rate {p.same_group_rate}; fictitious floor {p.fictitious_floor}, ratio "
               f"{p.fictitious_ratio} -> {p.fictitious_rate:.3f} per group per window "
               f"({p.fictitious_per_window:.0f} per camera-window)")
    ref = p.reference
    click.echo("reference: none (uncalibrated)" if ref is None else
               f"reference: {ref.method}, {ref.input_dim} -> {ref.reduced_dim} dims, {ref.n_samples} samples")
    click.echo(f"strata: {list(p.strata) or 'none'}; demographic min count {p.demographic_min_count}")
    click.echo("grouping: seeded hash" if p.codebook is None else
               f"grouping: learned codebook, {p.codebook.shape[0]} centroids in {p.codebook.shape[1]} dims "
               "(secret rotation from the seed)")
    for k, v in sorted(p.calibration.items()):
        click.echo(f"  calibration.{k}: {v}")


@contextlib.contextmanager
def _rich_progress(console: object) -> Iterator[Callable[[str, int], contextlib.AbstractContextManager]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:

        @contextlib.contextmanager
        def task(description: str, total: int) -> Iterator[Callable[[int], None]]:
            tid = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(tid, n)
            progress.update(tid, completed=total)

        yield task


@privacy.command(name="eval")
@click.option("--out", "out_dir", default="reports/privacy", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Directory for plots and figures.json.")
@click.option("--seed", default=1, show_default=True, help="Simulation seed (the people, not the noise).")
@click.option("--visitors", default=6000, show_default=True, help="Visitors in the simulated day.")
@click.option("--window-minutes", default=15.0, show_default=True, help="Window length of the counts.")
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluate this parameter set (for the 384-dim HSV descriptor of pipeline.vision) instead of calibrating one.")
@click.option("--no-strata", is_flag=True, help="Do not give the gender guess to the anonymiser (comparison).")
@click.option("--quick", is_flag=True, help="Smaller samples (about 4x faster, wider error bars).")
def eval_cmd(out_dir: Path, seed: int, visitors: int, window_minutes: float, params_path: Path | None,
             no_strata: bool, quick: bool) -> None:
    """Simulated crowds with ground truth: print the verdict table, write plots and figures.json."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.privacy.evaluation.report import verdict_rows, write_json, write_plots
    from pipeline.privacy.evaluation.run import EvalConfig, run_evaluation

    # Wide enough for the table when the output is a file or a CI log.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    cfg = EvalConfig(seed=seed, visitors=visitors, window_minutes=window_minutes, stratify_gender=not no_strata)
    if quick:
        cfg.calibration_people, cfg.calibration_pairs = 30000, 2000
        cfg.attribute_people, cfg.linkage_targets, cfg.visitors = 30000, 150, min(visitors, 3000)
    if params_path is not None:
        cfg.params = PrivacyParams.load(params_path)
    t0 = time.monotonic()
    with _rich_progress(console) as task:
        res = run_evaluation(cfg, progress=task)
    table = Table(title=f"Privacy evaluation - parameters {res.params.version}, simulated day of "
                        f"{res.figures['day']['visitors']} visitors, {res.figures['day']['cameras']} cameras, "
                        f"{cfg.window_minutes:g}-min windows")
    for col in ("measure", "target", "measured", "verdict"):
        table.add_column(col, overflow="fold")
    for row in verdict_rows(res):
        style = {"met": "green", "UNMET": "bold red"}.get(row.verdict, "dim")
        table.add_row(row.measure, row.target, row.measured, f"[{style}]{row.verdict}[/]")
    console.print(table)
    p = res.params
    console.print(f"parameters: noise_scale {p.noise_scale}, reduced dims "
                  f"{p.reference.reduced_dim if p.reference else '-'}, strata {list(p.strata) or 'none'}, "
                  f"fictitious floor {p.fictitious_floor} + ratio {p.fictitious_ratio:.3f}")
    paths = write_plots(res, out_dir)
    paths.append(write_json(res, out_dir))
    console.print(f"wrote {len(paths)} files to {out_dir}/ in {time.monotonic() - t0:.0f} s")


@privacy.command(name="attack")
@click.option("--scenario", default="reference", show_default=True, help="Simulator scenario (name or YAML path).")
@click.option("--days", default=2, show_default=True, type=click.IntRange(1, 60), help="Days of each simulated run.")
@click.option("--seed", default=21, show_default=True, help="Seed of the attacked run.")
@click.option("--prior-seed", type=int, default=None,
              help="Seed of the attacker's held-out prior run (default: seed + 1000).")
@click.option("--max-targets", default=2000, show_default=True, type=click.IntRange(1),
              help="Targets per attack at most (shared between busy, quiet and after-close hours).")
@click.option("--padding", type=click.Choice(("stream", "simulator")), default="stream", show_default=True,
              help="Fictitious persons in every window of every camera, as the processor pads a camera that "
                   "streams ('stream'), or only where the simulator pads (opening hours and capture windows).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of tables.")
@click.pass_context
def attack(ctx: click.Context, scenario: str, days: int, seed: int, prior_seed: int | None, max_targets: int,
           padding: str, as_json: bool) -> None:
    """Attack suite on what analysts read, and on the restricted tier for comparison (issue 11 item 5).

    (a) group-following insider, (b) analyst who saw the target once, (c) values that carry noise or
    aggregate >= 3 persons, (d) demographics to path, (e) row existence. Two simulated runs: the
    attacked one and the attacker's held-out prior. Exit 1 if an analyst-tier bar is not met."""
    import json

    from rich.console import Console

    from pipeline.redteam.report import print_report
    from pipeline.redteam.suite import SuiteConfig, run_suite

    obj = ctx.find_root().obj
    if isinstance(obj, dict) and "settings" in obj:
        settings = obj["settings"]
    else:
        from pipeline.settings import ConfigError, load_settings

        try:
            settings = load_settings()
        except ConfigError as e:
            raise click.ClickException(str(e)) from None
    agg = settings.aggregator
    # the deployment's demographics protection, on the simulator's windows
    demo_spec = agg.counts_spec("demographics", settings.processor.demographics_window_seconds)
    cfg = SuiteConfig(scenario=scenario, days=days, seed=seed, prior_seed=prior_seed, max_targets=max_targets,
                      padding=padding, spec=agg.spec(), demo_spec=demo_spec)
    err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
    try:
        with _rich_progress(err) as task:
            res = run_suite(cfg, task)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
    else:
        print_report(res, Console() if sys.stdout.isatty() else Console(width=200))
    if not res.passed:
        ctx.exit(1)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    privacy()
