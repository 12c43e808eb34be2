"""The SQL flow estimator on per-window group cells: the restricted tier's reference, not an analyst tool.

Why it is kept: before the published tier existed, flows were estimated straight from
``occurrences_by_window`` (fed by ``group_occurrences``, one row per camera, window and group).
Those cells are linkable, restricted data (issue 11, docs/AGGREGATOR.md), so analysts, the CLI,
the report and Grafana now read the aggregator's components (:mod:`pipeline.analytics.flows`).
This module is what the component path must reproduce on the same cells
(``tests/aggregator/test_against_sql.py``) and what ``bench/flows/components_eval.py`` compares
against. It reads restricted data: never wire it into an analyst-facing command.

The estimator (its formulas are docs/AGGREGATOR.md §6, with kappa from the whole period's group
totals minus the near window pairs instead of the published far band):

    S      = sum over windows t, lags d in [min_lag, max_lag], groups g of A_g(t) * B_g(t + d)
    kappa  = (sum_g a_g b_g - S_near) / (sum_g a_g * sum_g b_g - NN_near)
    chance = kappa * sum_t N_A(t) * N_B*(t)
    var0   = kappa * sum Q_A Q_B* - kappa^2 * sum (Q_A N_B*^2 + N_A^2 Q_B*) + kappa^3 * sum (N_A N_B*)^2
    flow   = (S - chance) / (p - kappa),  se = sqrt(max(var0, 0) / (p - kappa)^2 + max(flow, 0) (1 - p) / p)
"""
from __future__ import annotations

from pipeline.analytics.flows import FlowEstimate, FlowQuery, finite, registered_rate
from pipeline.sink.clickhouse import Warehouse


def _params(q: FlowQuery) -> tuple[dict[str, object], str]:
    """Query parameters and the camera IN-list (one placeholder per camera)."""
    p: dict[str, object] = {"version": q.params_version, "w": q.window_seconds, "t_from": q.t_from,
                            "t_to": q.t_to, "lag_lo": q.min_lag, "lags": q.max_lag - q.min_lag + 1,
                            "near_lo": -q.max_lag, "near_n": 2 * q.max_lag + 1}
    names = []
    for i, c in enumerate(q.cameras):
        p[f"cam{i}"] = c.key
        names.append(f"%(cam{i})s")
    return p, ", ".join(names)


def cell_flow_sql(db: str, q: FlowQuery, *, by_lag: bool = False) -> tuple[str, dict[str, object]]:
    """One SELECT estimating every ordered camera pair of ``q`` (and, with ``by_lag``, every lag).

    Returns SQL with %(name)s placeholders plus the values (``render_sql`` fills them in).
    """
    params, cams = _params(q)
    base = (f"FROM {db}.occurrences_by_window WHERE params_version = %(version)s AND window_seconds = %(w)s "
            f"AND concat(site_id, '/', camera_id) IN ({cams})")
    period = "window_start >= toDateTime(%(t_from)s) AND window_start < toDateTime(%(t_to)s)"
    a_side = (f"SELECT concat(site_id, '/', camera_id) AS cam_a, group_id, toInt64(toUInt32(window_start)) AS ws, "
              f"sum(occurrences) AS na {base} AND {period} GROUP BY cam_a, group_id, ws")
    # B shifted back by each lag, so that B's window t + d lines up with A's window t.
    def b_shift(lo: str, n: str) -> str:
        return (f"SELECT concat(site_id, '/', camera_id) AS cam_b, group_id, "
                f"toInt64(toUInt32(window_start)) - toInt64(lag) * %(w)s AS ws, occurrences AS nb, lag "
                + base.replace(" WHERE ", f" ARRAY JOIN arrayMap(i -> i + %({lo})s, range(%({n})s)) AS lag WHERE ", 1)
                + f" AND window_start >= toDateTime(%(t_from)s + %({lo})s * %(w)s) "
                f"AND window_start < toDateTime(%(t_to)s + (%({lo})s + %({n})s) * %(w)s)")

    def products(lag_col: str, lo: str = "lag_lo", n: str = "lags") -> tuple[str, str, str]:
        """(pair columns, co-occurrence sums s, window products nn/qq/nn2), per lag or summed over lags."""
        b_side = (f"SELECT cam_b, group_id, ws{lag_col}, sum(nb) AS nstar FROM ({b_shift(lo, n)}) "
                  f"WHERE ws >= %(t_from)s AND ws < %(t_to)s GROUP BY cam_b, group_id, ws{lag_col}")
        pair = "cam_a, cam_b" + lag_col
        s = (f"SELECT {pair}, sum(na * nstar) AS s FROM ({a_side}) AS a ALL INNER JOIN ({b_side}) AS b "
             f"USING (group_id, ws) WHERE cam_a != cam_b GROUP BY {pair}")
        wa = f"SELECT cam_a, ws, sum(na) AS n_a, sum(na * na) AS q_a FROM ({a_side}) GROUP BY cam_a, ws"
        wb = (f"SELECT cam_b, ws{lag_col}, sum(nstar) AS n_b, sum(nstar * nstar) AS q_b FROM ({b_side}) "
              f"GROUP BY cam_b, ws{lag_col}")
        # Float64 products: with dense (strict-profile) counts n_a^2 n_b^2 summed over a day
        # exceeds UInt64 and would wrap silently.
        windows = (f"SELECT {pair}, sum(toFloat64(n_a) * n_b) AS nn, sum(toFloat64(q_a) * q_b) AS qq, "
                   f"sum(pow(toFloat64(n_a) * n_b, 2)) AS nn2, "
                   f"sum(toFloat64(q_a) * n_b * n_b + toFloat64(n_a) * n_a * q_b) AS qn "
                   f"FROM ({wa}) AS wa ALL INNER JOIN ({wb}) AS wb USING ws WHERE cam_a != cam_b GROUP BY {pair}")
        return pair, s, windows

    pair, s, windows = products(", lag" if by_lag else "")
    # Near window pairs, both directions: lags -max_lag..max_lag (for kappa, below).
    _, s_near, windows_near = products("", "near_lo", "near_n")
    ga = (f"SELECT concat(site_id, '/', camera_id) AS cam_a, group_id, sum(occurrences) AS ga {base} AND {period} "
          f"GROUP BY cam_a, group_id")
    gb = ga.replace("AS cam_a", "AS cam_b").replace("AS ga", "AS gb").replace("GROUP BY cam_a", "GROUP BY cam_b")
    # kappa from the *far* part of the period. The same person's occurrences at A and B (either
    # order, within max_lag) share a group with rate p and would inflate a kappa taken over the
    # whole period, biasing every flow low by about its share of near window pairs (measured:
    # -5% on one-day periods). So from the period's group products (gg = sum_g a_g b_g,
    # tt = sum a * sum b) the near window pairs (|lag| <= max_lag) are removed, leaving pairs of
    # windows too far apart to hold one person twice.
    dist = (f"SELECT cam_a, cam_b, sum(toFloat64(ga) * gb) AS gg, toFloat64(any(ta)) * any(tb) AS tt FROM "
            f"(SELECT cam_a, group_id, ga, ta FROM ({ga}) AS ga1 ANY LEFT JOIN "
            f"(SELECT cam_a, sum(ga) AS ta FROM ({ga}) AS ga2 GROUP BY cam_a) AS ta USING cam_a) AS ka "
            f"ALL INNER JOIN "
            f"(SELECT cam_b, group_id, gb, tb FROM ({gb}) AS gb1 ANY LEFT JOIN "
            f"(SELECT cam_b, sum(gb) AS tb FROM ({gb}) AS gb2 GROUP BY cam_b) AS tb USING cam_b) AS kb "
            f"USING group_id WHERE cam_a != cam_b GROUP BY cam_a, cam_b")
    kappa = (f"SELECT cam_a, cam_b, (gg - s_near) / (tt - nn_near) AS kappa FROM "
             f"(SELECT cam_a, cam_b, s AS s_near, nn AS nn_near FROM ({windows_near}) AS w0 ANY LEFT JOIN "
             f"({s_near}) AS s0 USING (cam_a, cam_b)) AS t0 ANY LEFT JOIN ({dist}) AS d0 USING (cam_a, cam_b)")
    p = (f"(SELECT argMax(same_group_rate, registered_at) FROM {db}.privacy_params "
         f"WHERE params_version = %(version)s)")
    joined = (f"SELECT {pair}, s, nn, qq, nn2, qn, kappa FROM "
              f"(SELECT {pair}, s, nn, qq, nn2, qn FROM ({windows}) AS w ANY LEFT JOIN ({s}) AS sq USING ({pair})) AS wj "
              f"ANY LEFT JOIN ({kappa}) AS k USING (cam_a, cam_b)")
    sql = (f"SELECT {pair}, s, chance, kappa, p, (s - chance) / (p - kappa) AS flow, "
           f"sqrt(greatest(var0, 0) / pow(p - kappa, 2) + greatest((s - chance) / (p - kappa), 0) * (1 - p) / p) AS se "
           f"FROM (SELECT {pair}, s, kappa * nn AS chance, kappa, {p} AS p, "
           f"kappa * qq - pow(kappa, 2) * qn + pow(kappa, 3) * nn2 AS var0 FROM ({joined})) "
           f"ORDER BY {pair}")
    return sql, params


def estimate_cell_flows(wh: Warehouse, q: FlowQuery, *, by_lag: bool = False) -> list[FlowEstimate]:
    """Every ordered pair of ``q.cameras`` whose windows overlap in the period."""
    registered_rate(wh, q.params_version)
    sql, params = cell_flow_sql(wh.database, q, by_lag=by_lag)
    out = []
    for row in wh.rows(sql, params):
        if by_lag:
            a, b, lag, s, chance, kappa, p, flow, se = row
        else:
            (a, b, s, chance, kappa, p, flow, se), lag = row, None
        out.append(FlowEstimate(str(a), str(b), None if lag is None else int(lag), float(s), float(chance),
                                float(kappa), float(p), finite(flow), finite(se)))
    return out
