"""Processor metrics (prometheus-client). Labels are topic names, partitions, reasons and
stages only: never a frame id, camera image, key or anything derived from a person."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FRAMES = Counter("flowpipe_processor_frames_total", "Frame references handled by the processor", ["outcome"])
PERSONS = Counter("flowpipe_processor_persons_total", "Persons detected (before privacy padding)")
DEAD_LETTERS = Counter("flowpipe_dead_letters_total", "Records sent to the dead-letter topic", ["stage", "reason"])
DELETION_LATENCY = Histogram(
    "flowpipe_capture_to_deletion_seconds", "Time from frame capture to blob deletion by the processor",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120))
STAGE_SECONDS = Histogram("flowpipe_processor_stage_seconds", "Processor time per frame and stage", ["stage"],
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
WINDOWS = Counter("flowpipe_processor_windows_emitted_total", "Camera windows emitted")
OPEN_WINDOWS = Gauge("flowpipe_processor_open_windows", "Camera windows held in memory (counts only)")
EDGE_CLOCK_SKEW = Histogram(
    "flowpipe_processor_edge_clock_skew_seconds",
    "The edge's clock (its frame expiry minus the store TTL) minus the broker's append time: clock skew "
    "minus delivery delay; positive: the edge clock is ahead",
    buckets=(-600, -60, -30, -10, -5, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 600))
LAST_EVENT = Gauge("flowpipe_processor_last_event_timestamp_seconds", "When the processor last handled a frame")

# Flow aggregator (pipeline/aggregator/app.py). Labels are stage names only.
AGG_STATE_AGE = Gauge("flowpipe_aggregator_state_oldest_window_age_seconds",
                      "Age of the oldest restricted window a stage holds in memory (bound: aggregator spec)", ["stage"])
AGG_SNAPSHOT_BYTES = Gauge("flowpipe_aggregator_snapshot_bytes", "Size of the last state snapshot written", ["stage"])
AGG_LATE_CELLS = Counter("flowpipe_aggregator_late_cells_total", "Occurrence cells dropped as later than the lateness")
AGG_ROWS = Counter("flowpipe_aggregator_published_rows_total", "Published component rows emitted")
