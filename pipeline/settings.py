"""Typed settings for every component.

One object, read from (in increasing priority) defaults that work on the local stack, a YAML
config file (``FLOW_CONFIG`` or ``./flow.yaml``), and ``FLOW_*`` environment variables with
``__`` between nesting levels (``FLOW_KAFKA__BOOTSTRAP=host:9092``). Unknown keys are rejected
with their path so a typo never silently falls back to a default.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# Where schemas/, infra/ and .var/ live: the checkout, or FLOW_HOME for an installed package.
REPO_ROOT = Path(os.environ.get("FLOW_HOME") or Path(__file__).resolve().parent.parent)


# The stack's state: data, logs and the security material it creates at first start
# (infra/local/security.sh). FLOW_VAR_DIR moves it, for the scripts and for these defaults.
VAR_DIR = Path(os.environ.get("FLOW_VAR_DIR") or REPO_ROOT / ".var")
SECURITY_DIR = VAR_DIR / "security"

ClickHouseRole = Literal["admin", "sink", "analyst"]
KafkaRole = Literal["admin", "edge", "processor", "aggregator", "sink", "exporter", "simulator"]


class ConfigError(ValueError):
    """Settings that cannot be used; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap: str = "127.0.0.1:19092"
    client_id: str = "flowpipe"
    # Every client authenticates as its role (SASL/SCRAM-SHA-512 over TLS, pinned to the
    # stack's own CA) and may do only what the role's ACLs allow (pipeline/ops/acls.py).
    # PLAINTEXT is an explicit development option, never the default.
    security_protocol: Literal["SASL_SSL", "PLAINTEXT"] = "SASL_SSL"
    ca_file: Path = SECURITY_DIR / "ca.crt"
    # <role>.password per role (0600); a deployment mounts only its own role's file.
    credentials_dir: Path = SECURITY_DIR / "kafka"
    # Topic durability (infra/topics.yaml applies it to every topic): 1/1 on the single-broker
    # development stack; 3/2 on a cluster (`FLOW_KAFKA_BROKERS=3 flowctl stack up`), so one
    # broker can fail without losing or refusing acknowledged writes.
    replication_factor: int = Field(1, ge=1, le=10)
    min_insync_replicas: int = Field(1, ge=1, le=10)

    @model_validator(mode="after")
    def _durable(self) -> "KafkaSettings":
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas={self.min_insync_replicas} exceeds replication_factor="
                             f"{self.replication_factor}: no write could ever be acknowledged")
        return self
    # Topic names: raw-data topics are declared with short retention in infra/topics.yaml.
    frame_refs_topic: str = "frames.refs"
    occurrences_topic: str = "flow.group-occurrences"
    demographics_topic: str = "flow.demographic-counts"
    crossings_topic: str = "flow.line-crossings"
    receipts_topic: str = "ops.deletion-receipts"
    dead_letter_topic: str = "ops.dead-letters"
    ledger_topic: str = "ops.frame-ledger"
    # The flow aggregator's topics (docs/AGGREGATOR.md): restricted partials between its two
    # stages and the snapshots of their state; published components for the sink.
    partials_topic: str = "flow.aggregator-partials"
    partitions_changelog_topic: str = "flow.aggregator-partitions-changelog"
    combiner_changelog_topic: str = "flow.aggregator-combiner-changelog"
    flow_components_topic: str = "flow.flow-components"
    footfall_components_topic: str = "flow.footfall-components"
    # Its counts stages: exact per-window demographics / crossings (restricted) in, protected
    # camera-hour cells out.
    demographics_changelog_topic: str = "flow.aggregator-demographics-changelog"
    crossings_changelog_topic: str = "flow.aggregator-crossings-changelog"
    demographic_components_topic: str = "flow.demographic-components"
    crossing_components_topic: str = "flow.crossing-components"


class ClickHouseSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(19000, ge=1, le=65535)
    database: str = "flow"
    # Each component connects as its role (admin, sink, analyst: infra/local/clickhouse.sh)
    # with the password in credentials_dir/<role>.password (0600); a deployment mounts only
    # its own role's file.
    credentials_dir: Path = SECURITY_DIR / "clickhouse"
    # Flow estimates join a week of a site's group counts against itself at every lag; 18.16's
    # default per-query limit (~3.7 GiB here) is too small for seven days of six cameras.
    max_query_memory_gb: float = Field(8.0, gt=0, le=1024)
    # A reply slower than this fails the request on the client, although the server may still
    # complete it (the sink then checks before repeating an insert).
    send_receive_timeout_seconds: float = Field(300.0, gt=0, le=86400)
    # A replicated deployment (docs/SCALING.md §8): the cluster name of remote_servers that the
    # migrations create their tables ON (ReplicatedMergeTree on every replica, plus a Distributed
    # <table>_all over them), and the other replicas a client fails over to, as host:port,...
    # Empty: one server.
    cluster: str = ""
    alt_hosts: str = ""
    # Replicas that must hold an insert before it is acknowledged (0: the one written to).
    # Without it, a batch acknowledged by a replica that dies before the others fetched it is
    # missing from every live replica (measured: one 2,000-row batch of 30,000 in the replica
    # kill test) until that replica comes back. With it, inserts wait while too few replicas
    # are up, and Kafka holds the records meanwhile: on two replicas use 2, on three 2.
    insert_quorum: int = Field(0, ge=0, le=16)

    @field_validator("database")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.replace("_", "").isalnum():
            raise ValueError("must be a plain identifier (letters, digits, _)")
        return v

    @field_validator("cluster")
    @classmethod
    def _cluster_name(cls, v: str) -> str:
        if v and not v.replace("_", "").isalnum():
            raise ValueError("must be empty or a plain identifier (the cluster's name in remote_servers)")
        return v

    @field_validator("alt_hosts")
    @classmethod
    def _host_list(cls, v: str) -> str:
        for item in filter(None, (x.strip() for x in v.split(","))):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{item!r} is not host:port (a comma-separated list of the other replicas)")
        return v


class StoreSettings(_Section):
    """The ephemeral frame store that holds encrypted frames for seconds."""

    url: str = Field(default_factory=lambda: f"file://{REPO_ROOT / '.var' / 'frames'}")
    ttl_seconds: float = Field(30.0, gt=0, le=600)
    sweep_interval_seconds: float = Field(1.0, gt=0, le=60)
    max_blob_bytes: int = Field(4_000_000, gt=0)
    # Edges and processors on different hosts (docs/SCALING.md): a site runs `flowctl blobstore
    # serve` over its local store; its edges publish blob URIs under public_url; processors list
    # the sites' services in remote_origins and fetch and delete over HTTPS with token_file's
    # bearer token, trusting ca_file. Empty: edge and processor share the local directory.
    public_url: str = ""
    remote_origins: list[str] = Field(default_factory=list)
    ca_file: Path = SECURITY_DIR / "ca.crt"
    token_file: Path = SECURITY_DIR / "blobstore" / "processor.token"
    # A blob service also accepts this token on /v1/stats and /metrics only (never a frame):
    # the centre's exporter sets it as its token_file to watch the sites' ages.
    monitor_token_file: Path = SECURITY_DIR / "blobstore" / "monitor.token"
    server_cert_file: Path = SECURITY_DIR / "blobstore" / "server.pem"
    request_timeout_seconds: float = Field(2.0, gt=0, le=30)
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(19443, ge=1, le=65535)

    @field_validator("public_url")
    @classmethod
    def _https_base(cls, v: str) -> str:
        if v and (not v.startswith("https://") or urlparse(v).path.strip("/") or urlparse(v).query):
            raise ValueError(f"{v!r} must be an https base URL with no path, e.g. https://edge-1.example:19443")
        return v.rstrip("/")

    @field_validator("remote_origins")
    @classmethod
    def _https_origins(cls, v: list[str]) -> list[str]:
        for o in v:
            if not o.startswith("https://") or urlparse(o).path.strip("/") or not urlparse(o).hostname:
                raise ValueError(f"{o!r} must be an https origin with no path, e.g. https://edge-1.example:19443")
        return v


class KeySettings(_Section):
    """Where the processors' X25519 key pair lives (private key only on processor hosts)."""

    dir: Path = REPO_ROOT / ".var" / "keys"
    # After a rotation the superseded private key still opens frames for the frame store's TTL
    # plus the processors' clock-skew tolerance plus this margin (edges switch keys within a
    # second; frames in flight arrive within their TTL), then processors drop it and
    # `flowctl keys retire` deletes it.
    retire_margin_seconds: float = Field(60.0, ge=0, le=86400)


class EdgeSettings(_Section):
    # 1-64 characters of A-Z a-z 0-9 . _ : - : ids appear in reports, logs and metric labels
    site_id: str = Field("site-1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    camera_id: str = Field("cam-1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
    sample_fps: float = Field(2.0, gt=0, le=60)
    max_width: int = Field(640, ge=64, le=4096)
    max_height: int = Field(480, ge=64, le=4096)
    jpeg_quality: int = Field(80, ge=10, le=100)


class ProcessorSettings(_Section):
    app_id: str = "flowpipe-processor"
    # faust's working directory (table metadata; tables live in memory). Not the current
    # directory, which every run and test would otherwise litter with "<app_id>-data".
    data_dir: Path = Path(".var/faust")
    window_seconds: int = Field(60, ge=1, le=3600)
    # A window closes once frames this much later than its end have been seen (or the camera
    # went quiet for idle_flush_seconds), so late frames from a slow edge still count.
    grace_seconds: int = Field(5, ge=0, le=600)
    idle_flush_seconds: float = Field(10.0, gt=0, le=3600)
    # Edge clocks are not trusted. Against the broker's append time (LogAppendTime on the
    # frame-reference topic), a frame whose capture time is more than this ahead, or whose edge
    # clock (its expiry minus the store TTL) is more than this ahead or more than the TTL plus
    # this behind, is dead-lettered as clock_skew; a frame ahead by less is counted at its
    # append time, so it cannot move the camera's windows or passes forward (README, "For
    # SREs": Time). Older capture times (replays, backfills) are counted as late frames.
    clock_skew_tolerance_seconds: float = Field(5.0, ge=0, le=3600)
    # Person passes (pipeline/processor/passes.py): one pass per confirmed track of the
    # low-frame-rate tracker (pipeline/vision/tracker.py). Detections scoring at least
    # track_high_score start and continue tracks; those between track_low_score and it may only
    # continue one. A track needs pass_min_hits detections to count, and ends after
    # pass_max_gap_seconds unseen. Appearance (re-id embedding) joins motion in the association
    # when the descriptor is an embedding; track_appearance_gate is the largest cosine distance
    # between a track's running embedding and a detection it may take.
    # Chosen on the labelled vtest set: bench/vision/perception.py.
    pass_max_gap_seconds: float = Field(2.0, gt=0, le=60)
    pass_min_hits: int = Field(2, ge=1, le=100)
    track_high_score: float = Field(0.5, gt=0, le=1)
    track_low_score: float = Field(0.3, gt=0, le=1)
    track_appearance_gate: float = Field(0.6, gt=0, le=2)
    # A pass is grouped (and its descriptor sum dropped) at the latest this long after it began.
    pass_max_seconds: float = Field(30.0, gt=0, le=600)
    # Demographic counts are protected (cells < 3 pooled or suppressed) per this longer window:
    # at ~3 persons per camera-minute, per-minute cells would almost all be pooled into unknown
    # (measured with the simulator: 98% of published persons unknown at 60 s, 37% at 900 s,
    # which is the share without a usable face).
    demographics_window_seconds: int = Field(900, ge=1, le=86400)
    # Person detector: 'omz-0200' (OMZ person-detection-0200, 256x256 input; default: keeps 20+
    # frames/s per worker thread with the re-id embedding), 'omz-0201' (384x384: better recall
    # of small people, about twice the cost), 'ssdlite', 'ssdlite-split' or 'hog' (older, kept
    # for comparison). OMZ detectors hand boxes down to track_low_score to the tracker.
    detector: str = "omz-0200"
    # Appearance descriptor handed to the privacy core and used by the tracker as a cue:
    # 'reid-0288' (256-d OMZ person re-identification embedding, ~6 ms per person; default),
    # 'reid-0286' (256-d, stronger, ~30 ms per person), 'hsv' (384-d body-part colour
    # histograms) or 'hsv-cnn' (768-d). Measured in bench/vision/perception.py and issue 10's
    # notes. The privacy parameter set must be calibrated for the chosen descriptor's dimension.
    descriptor: Literal["reid-0288", "reid-0286", "hsv", "hsv-cnn"] = "reid-0288"
    # A calibrated parameter file; without one the processor uses the deployment's secret set in
    # keys.dir (created by `flowctl keys init`). The public development set (seed in the source
    # code) is refused unless allow_development_params is set (pipeline/privacy/deployment.py).
    privacy_params: Path | None = None
    allow_development_params: bool = False
    # The camera layout (pipeline/layout.py; the file `flowctl layout load` reads): cameras with
    # a count_line get their crossings counted by direction, per demographics window.
    layout: Path | None = None
    worker_threads: int = Field(1, ge=1, le=64)
    # A worker that dies without leaving its consumer group (kill -9, a lost host) holds its
    # partitions until this session timeout: frames waiting there are swept when their blobs'
    # TTL ends, so it must stay well under store.ttl_seconds (faust's default is 60 s).
    session_timeout_seconds: float = Field(10.0, ge=6, le=300)
    # Prometheus /metrics of the worker itself (0 = off). Labels never carry personal data.
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_addr: str = "127.0.0.1"


class ExporterSettings(_Section):
    """The SRE exporter: raw-topic record ages, consumer lag, frame-store ages."""

    port: int = Field(9464, ge=1, le=65535)
    addr: str = "127.0.0.1"
    processor_group: str | None = None  # default: processor.app_id
    # Alert margin on top of retention + segment roll + retention check interval.
    retention_check_interval_ms: int = Field(1000, ge=0)


class SinkSettings(_Section):
    group_id: str = "flowpipe-sink"
    # Rows per insert when records arrive faster than batch_max_seconds flushes them. Each insert
    # is a new part the server writes and later merges: on 18.16 (bench/flows/sink_load.py,
    # docs/SCALING.md §6) the server spent ~11 µs a row at 5,000-row inserts, ~3 at 20,000 and
    # ~1.7 at 50,000, and the sink landed 71-86k, 111k and 147-153k rows/s; 100,000 gained
    # nothing more. A flush of 50,000 published rows is a few MB in each of the sink's processes.
    # At most 1,000,000: clickhouse-driver splits an insert into blocks of insert_block_size
    # (1,048,576) rows, and only one block lands whole or not at all.
    batch_max_rows: int = Field(50_000, ge=1, le=1_000_000)
    batch_max_seconds: float = Field(2.0, gt=0)
    # How long one batch is retried through transient or ambiguous warehouse failures before
    # the sink stops (offsets uncommitted: nothing is lost, a restart resumes).
    retry_seconds: float = Field(120.0, gt=0, le=86400)


class AggregatorSettings(_Section):
    """The streaming flow aggregator (pipeline/aggregator, docs/AGGREGATOR.md).

    Lags are in windows of ``window_seconds`` (which must equal processor.window_seconds).
    ``se_ranges`` are the lag ranges whose standard error is published exactly (default: the
    whole range 0..max_lag_windows); the far band (``far_lag_min``..``far_lag_max``, both
    directions; 0 = automatic) is where kappa is measured. Everything the aggregator keeps of the
    restricted occurrences must be gone ``restricted_bound_seconds`` after capture: a
    configuration that cannot promise that is refused with the arithmetic.
    """

    app_id: str = "flowpipe-aggregator"
    # Partitions of the occurrences topic (keyed by group id): the combiner waits for all of them.
    partitions: int = Field(4, ge=1, le=1000)
    # Worker: a partition's state is snapshotted whenever a window becomes final and at least
    # this often while it changes (and every snapshot_max_seconds regardless, so the changelog,
    # whose retention is changelog_seconds, always holds a recent one).
    snapshot_interval_seconds: float = Field(10.0, gt=0, le=300)
    snapshot_max_seconds: float = Field(120.0, gt=0, le=3600)
    # A worker that dies without leaving its group (kill -9, a lost host) holds its partitions,
    # and their hours, until this session timeout; another worker then restores their snapshots.
    session_timeout_seconds: float = Field(30.0, ge=6, le=300)
    # With no input for this long, the clock moves with wall time (minus the processor's delay),
    # so state still expires and hours still close at night or during an outage.
    idle_advance_seconds: float = Field(60.0, gt=0, le=3600)
    # Records whose window starts more than this after wall clock come from a skewed clock:
    # dead-lettered, because they would finalise every earlier window (docs/AGGREGATOR.md §4).
    future_tolerance_seconds: int = Field(300, ge=0, le=86400)
    metrics_port: int = Field(0, ge=0, le=65535)   # 0: no metrics endpoint
    metrics_addr: str = "127.0.0.1"
    # Published rows of one camera (one message key) go out up to this many to a Kafka message
    # (pipeline/aggregator/messages.py): per-message costs dominated the sink. 2,000 rows stay
    # well under Kafka's 1 MB message limit even with 64-character identifiers.
    publish_batch_rows: int = Field(500, ge=1, le=2000)
    # Published-tier protection (docs/PRIVACY.md). Footfall: epsilon-DP per person-day for people
    # with at most footfall_passes_per_person_day passes (all cameras), discrete Laplace of scale
    # 2 x bound / epsilon on both values of every camera-hour (see footfall_noise_scale). Flows: discrete Laplace of scale flow_noise_scale on
    # every published co-occurrence sum, chosen from bench/privacy/published_noise.py's curve.
    footfall_epsilon: float = Field(1.0, gt=0, le=100)
    footfall_passes_per_person_day: int = Field(8, ge=1, le=1000)
    # Demographics and line crossings per camera-hour (pipeline/aggregator/counts.py): the same
    # mechanism, each with its own epsilon per person-day. A pass counts in one demographic cell
    # (bound: footfall_passes_per_person_day); crossings have their own bound.
    # 0.5, not 1: at 1 (scale 8) the attack suite's demographics-to-path analyst reached a p99
    # gain of 0.049-0.050 against the 0.05 bar (`flowctl privacy attack --days 3`).
    demographics_epsilon: float = Field(0.5, gt=0, le=100)
    crossings_epsilon: float = Field(1.0, gt=0, le=100)
    crossings_per_person_day: int = Field(16, ge=1, le=1000)
    flow_noise_scale: float = Field(4.0, ge=0, le=1e6)
    # Window totals (N per camera-window; Q and range Q* scaled up) before the published products
    # nn, qq, qn, nn2 are formed: without it those unnoised products move by whole window totals
    # when one person passes.
    total_noise_scale: float = Field(2.0, ge=0, le=1e6)
    window_seconds: int = Field(60, ge=1, le=3600)
    max_lag_windows: int = Field(30, ge=0, le=10_000)
    se_ranges: tuple[tuple[int, int], ...] = ()
    far_lag_min: int = Field(0, ge=0)
    far_lag_max: int = Field(0, ge=0)
    lateness_seconds: int = Field(300, ge=0, le=3600)
    # camera (every cross-site camera pair), site (cross-site flows per site pair: a chain), off;
    # true / false mean camera / off (docs/SCALING.md)
    cross_site: bool | Literal["camera", "site", "off"] = True
    restricted_bound_seconds: int = Field(7200, ge=60, le=86400)
    processor_delay_seconds: int = Field(15, ge=0, le=3600)
    # How long a state snapshot may stay on the aggregator's changelog topics: retention.ms +
    # segment.ms + the broker's retention check of those topics (infra/topics.yaml).
    changelog_seconds: int = Field(600, ge=0, le=86400)

    @model_validator(mode="after")
    def _spec_is_valid(self) -> "AggregatorSettings":
        self.spec()
        return self

    def spec(self) -> Any:
        """The :class:`pipeline.aggregator.model.AggregatorSpec` these settings describe."""
        from pipeline.aggregator.model import AggregatorSpec, SpecError

        try:
            return AggregatorSpec(window_seconds=self.window_seconds, max_lag=self.max_lag_windows,
                                  ranges=self.se_ranges, far_min=self.far_lag_min, far_max=self.far_lag_max,
                                  lateness_seconds=self.lateness_seconds, cross_site=self.cross_site,
                                  bound_seconds=self.restricted_bound_seconds,
                                  processor_delay_seconds=self.processor_delay_seconds,
                                  changelog_seconds=self.changelog_seconds,
                                  flow_noise_scale=self.flow_noise_scale, total_noise_scale=self.total_noise_scale,
                                  footfall_noise_scale=self.footfall_noise_scale)
        except SpecError as e:
            raise ValueError(str(e)) from None

    @property
    def footfall_noise_scale(self) -> float:
        """Both published footfall values of a camera-hour (occurrences, and live windows) can
        move with one person's passes, each by at most the pass bound per day: the footfall table's
        L1 sensitivity per person-day is twice the bound, so each value gets noise of scale
        2 x bound / epsilon and the table as a whole is epsilon-DP per person-day."""
        return 2 * self.footfall_passes_per_person_day / self.footfall_epsilon

    def counts_spec(self, kind: str, window_seconds: int) -> Any:
        """The :class:`pipeline.aggregator.counts.CountsSpec` of one counts stage;
        ``window_seconds``: the processor's demographics window (processor.demographics_window_seconds)."""
        from pipeline.aggregator.counts import CountsSpec, demographic_grid

        if kind == "demographics":
            return CountsSpec("demographics", window_seconds=window_seconds, lateness_seconds=self.lateness_seconds,
                              epsilon=self.demographics_epsilon, per_person_day=self.footfall_passes_per_person_day,
                              grid=demographic_grid())
        return CountsSpec("crossings", window_seconds=window_seconds, lateness_seconds=self.lateness_seconds,
                          epsilon=self.crossings_epsilon, per_person_day=self.crossings_per_person_day)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLOW_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    store: StoreSettings = StoreSettings()
    keys: KeySettings = KeySettings()
    edge: EdgeSettings = EdgeSettings()
    processor: ProcessorSettings = ProcessorSettings()
    sink: SinkSettings = SinkSettings()
    exporter: ExporterSettings = ExporterSettings()
    aggregator: AggregatorSettings = AggregatorSettings()
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


def key_retire_after_seconds(s: "Settings") -> float:
    """How long a superseded processor key keeps opening frames (KeySettings)."""
    return s.store.ttl_seconds + s.processor.clock_skew_tolerance_seconds + s.keys.retire_margin_seconds


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("FLOW_CONFIG")
        if path is None:
            default = Path.cwd() / "flow.yaml"
            if not default.exists():
                return {}
            path = str(default)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} (from FLOW_CONFIG) does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping at top level")
        return data


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's errors into one readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None


def settings_as_env(s: "Settings") -> dict[str, str]:
    """The process environment plus ``s`` as FLOW_* variables: how tests and benches hand
    settings they built in code (isolated topics, databases, stores) to flowctl subprocesses."""
    import json

    e = dict(os.environ)
    for section in ("kafka", "clickhouse", "store", "keys", "processor", "sink", "edge", "aggregator"):
        for k, v in getattr(s, section).model_dump().items():
            if v is None:
                continue
            if hasattr(v, "get_secret_value"):
                v = v.get_secret_value()
            if isinstance(v, (list, tuple, dict)):
                v = json.dumps(v)   # pydantic-settings reads complex values from env as JSON
            e[f"FLOW_{section.upper()}__{k.upper()}"] = str(v)
    return e
