"""docker-compose.yml checked against the settings model and the security layout.

This machine has no container runtime, so the compose file cannot be brought up here. What can
be checked is checked: every FLOW_* variable is a setting the model accepts, every secret a
service mounts exists in the layout infra/compose/init-security.sh creates and is the one its
role needs (and no other), the private key volume reaches only the processor side, nothing
pipeline-side runs as root, and nothing is anonymous."""
import re

import pytest
import yaml

from pipeline.settings import REPO_ROOT, load_settings

DOC = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SVC = DOC["services"]
PIPELINE = [n for n, s in SVC.items() if s.get("image") == "flowpipe:latest" and n != "security-init"]

# What each pipeline service runs, hence the Kafka and ClickHouse role it must authenticate as.
ROLES = {"init": ("admin", "admin"), "processor": ("processor", None), "aggregator": ("aggregator", None),
         "sink": ("sink", "sink"), "sweeper": ("edge", None), "exporter": ("exporter", None), "edge": ("edge", None)}


def _env(name):
    """The service's environment with compose's ${VAR:-default} interpolated to the defaults."""
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in (SVC[name].get("environment") or {}).items()}


def _mounts(name, services=None):
    """target -> (source, subpath, read_only) of a service's volumes, long or short syntax."""
    out = {}
    for v in (services or SVC)[name].get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            out[parts[1]] = (parts[0], None, len(parts) > 2 and parts[2] == "ro")
        else:
            out[v["target"]] = (v["source"], (v.get("volume") or {}).get("subpath"), bool(v.get("read_only")))
    return out


def _created_role_dirs():
    script = (REPO_ROOT / "infra/compose/init-security.sh").read_text()
    names = set(re.findall(r"role_dir ([a-z-]+) ", script))
    for loop_roles, prefix in re.findall(r'for r in ([a-z ]+); do role_dir "([a-z]+)-\$r"', script):
        names |= {f"{prefix}-{r}" for r in loop_roles.split()}
    names |= set(re.findall(r"roles/(clickhouse-server)", script))
    return {f"roles/{n}" for n in names}


def test_the_services_are_there():
    assert {"security-init", "kafka", "clickhouse", "init", "processor", "aggregator", "sink", "edge", "sweeper",
            "exporter", "prometheus", "grafana"} <= set(SVC)
    assert set(ROLES) == set(PIPELINE)
    assert SVC["kafka"]["image"].endswith(":3.9.1")  # same version as infra/local/kafka/pom.xml
    assert "<kafka.version>3.9.1</kafka.version>" in (REPO_ROOT / "infra/local/kafka/pom.xml").read_text()


@pytest.mark.parametrize("name", sorted(ROLES))
def test_every_flow_variable_is_a_setting_and_every_secret_is_the_roles_own(name, monkeypatch):
    env = _env(name)
    for k in list(__import__("os").environ):
        if k.startswith("FLOW_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith("FLOW_") and "__" in k:
            monkeypatch.setenv(k, v)
    s = load_settings()   # raises on any FLOW_* name the model does not know
    assert s.kafka.security_protocol == "SASL_SSL"
    mounts = _mounts(name)
    created = _created_role_dirs()
    kafka_role, ch_role = ROLES[name]
    secrets = {t: sub for t, (src, sub, _ro) in mounts.items() if src == "security"}
    for target, sub in secrets.items():
        assert sub in created, (name, sub)              # the layout creates it
        assert mounts[target][2], (name, target)        # and it is mounted read-only
    assert secrets[str(s.kafka.credentials_dir)] == f"roles/kafka-{kafka_role}"
    assert secrets[str(s.kafka.ca_file.parent)] == "roles/ca"
    if ch_role:
        assert secrets[str(s.clickhouse.credentials_dir)] == f"roles/clickhouse-{ch_role}"
    others = set(secrets.values()) - {f"roles/kafka-{kafka_role}", "roles/ca", f"roles/clickhouse-{ch_role}"}
    assert others <= ({"roles/kafka-provision"} if name == "init" else set()), (name, others)


def test_private_keys_reach_only_the_processor_side_and_edges_get_public_keys():
    holders = {n for n in PIPELINE if any(src == "keys" for src, _s, _ro in _mounts(n).values())}
    assert holders == {"init", "processor", "aggregator"}
    assert _mounts("processor")["/keys"][2] and _mounts("aggregator")["/keys"][2]   # read-only
    edge = _mounts("edge")
    assert _env("edge")["FLOW_KEYS__DIR"] == "/public-keys" and edge["/public-keys"] == ("public-keys", None, True)
    assert "cp /keys/*.pub /keys/current /public-keys/" in " ".join(SVC["init"]["command"])


def test_nothing_runs_as_root_or_anonymous():
    base = DOC["x-pipeline"]
    assert base["user"] == "10001:10001"
    assert all(SVC[n].get("user", base["user"]) == "10001:10001" for n in PIPELINE)
    assert "USER 10001" in (REPO_ROOT / "Dockerfile").read_text()
    assert "uid=10001" in DOC["volumes"]["frames"]["driver_opts"]["o"]
    g = SVC["grafana"]["environment"]
    assert g["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and "GF_SECURITY_ADMIN_PASSWORD__FILE" in g
    ds = yaml.safe_load((REPO_ROOT / "infra/grafana/provisioning/datasources/clickhouse.yml").read_text())
    (ch,) = [d for d in ds["datasources"] if d["type"] == "grafana-clickhouse-datasource"]
    assert ch["jsonData"]["username"] == "analyst"
    pw = ch["secureJsonData"]["password"]
    assert pw.startswith("$__file{") and _mounts("grafana")[pw[len("$__file{"):-1].rsplit("/", 1)[0]][1] == "roles/grafana"


def test_the_broker_in_compose_is_configured_like_the_local_one():
    k = SVC["kafka"]["environment"]
    local = (REPO_ROOT / "infra/local/kafka.sh").read_text()
    assert k["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL,INTERNAL:SSL"
    assert "listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL" in local
    for prop in ("authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                 "allow.everyone.if.no.acl.found=false", "super.users=User:broker;User:admin",
                 "sasl.enabled.mechanisms=SCRAM-SHA-512"):
        key, value = prop.split("=", 1)
        assert prop in local and str(k["KAFKA_" + key.upper().replace(".", "_")]) == value, prop
    assert _mounts("kafka")["/etc/kafka/flowpipe"][1] == "roles/kafka-broker"
    assert k["KAFKA_SSL_KEYSTORE_LOCATION"].startswith("/etc/kafka/flowpipe/")


CLUSTER = yaml.safe_load((REPO_ROOT / "infra/compose/clickhouse-cluster.yml").read_text())


def test_the_cluster_layout_gives_its_clients_settings_the_model_accepts(monkeypatch):
    svc = CLUSTER["services"]
    for name in ("init", "sink"):
        env = svc[name]["environment"]
        for k in list(__import__("os").environ):
            if k.startswith("FLOW_"):
                monkeypatch.delenv(k)
        for k, v in {**_env(name), **env}.items():
            if k.startswith("FLOW_") and "__" in k:
                monkeypatch.setenv(k, str(v))
        s = load_settings()
        assert s.clickhouse.cluster == "flow" and s.clickhouse.host == "clickhouse"
        assert s.clickhouse.insert_quorum == (2 if name == "sink" else 0)   # the sink's acks need both replicas
        alt_host = s.clickhouse.alt_hosts.split(":")[0]
        assert alt_host in svc and svc[alt_host]["environment"]["FLOW_CH_REPLICA"] == "r2"
    assert svc["clickhouse"]["environment"]["FLOW_CH_REPLICA"] == "r1"


def test_the_cluster_secrets_reach_only_the_clickhouse_servers_and_name_their_services():
    script = (REPO_ROOT / "infra/compose/init-security.sh").read_text()
    assert 'mkdir -p "$SEC/roles/clickhouse-cluster"' in script
    for name, s in {**SVC, **CLUSTER["services"]}.items():
        subs = {(v.get("volume") or {}).get("subpath") for v in s.get("volumes", []) if isinstance(v, dict)}
        if "roles/clickhouse-cluster" in subs:
            assert name in ("clickhouse", "clickhouse-2"), name
    for name in ("clickhouse", "clickhouse-2"):
        (cfg,) = [v for v in CLUSTER["services"][name]["volumes"] if isinstance(v, dict)
                  and (v.get("volume") or {}).get("subpath") == "roles/clickhouse-cluster"]
        assert cfg["read_only"] and cfg["target"] == "/etc/clickhouse-server/config.d"
    # remote_servers names the two replica services; Keeper nodes are the three keeper services
    assert re.findall(r"<replica><host>([a-z0-9-]+)</host>", script) == ["clickhouse", "clickhouse-2"]
    keepers = re.findall(r"<node><host>(keeper-\d)</host><port>9181</port></node>", script)
    assert keepers == ["keeper-1", "keeper-2", "keeper-3"] and set(keepers) <= set(CLUSTER["services"])
    raft = (REPO_ROOT / "infra/compose/clickhouse/keeper.xml").read_text()
    ids = {int(CLUSTER["services"][k]["environment"]["KEEPER_SERVER_ID"]): k for k in keepers}
    assert re.findall(r"<id>(\d)</id><hostname>(keeper-\d)</hostname>", raft) == [(str(i), ids[i]) for i in sorted(ids)]
    assert "<identity>clickhouse:" in script and "<secret>" in script   # no anonymous Keeper nodes or cluster


class _ComposeLoader(yaml.SafeLoader):
    """Compose's merge tags (!override, !reset) read as the plain value they carry."""


_ComposeLoader.add_constructor("!override", lambda loader, node: (
    loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node, deep=True) if isinstance(node, yaml.MappingNode) else loader.construct_scalar(node)))
_ComposeLoader.add_constructor("!reset", lambda loader, node: None)

SITE = yaml.load((REPO_ROOT / "infra/compose/site-store.yml").read_text(), Loader=_ComposeLoader)


def _site_settings(name, monkeypatch):
    """Settings of service ``name`` with the site layout over the main file (environments merge)."""
    for k in list(__import__("os").environ):
        if k.startswith("FLOW_"):
            monkeypatch.delenv(k)
    base = _env(name) if name in SVC else {}
    for k, v in {**base, **(SITE["services"][name].get("environment") or {})}.items():
        if k.startswith("FLOW_") and "__" in k:
            monkeypatch.setenv(k, str(v))
    return load_settings()


def _site_mounts(name):
    """A service's mounts in the site layout: its override's volumes replace the main file's
    (``!override``) where it gives them."""
    return _mounts(name, SITE["services"] if "volumes" in SITE["services"][name] else SVC)


def test_the_site_layout_gives_edge_blob_service_and_processors_settings_the_model_accepts(monkeypatch):
    """Edges at the sites, processors at the centre: the edge publishes the blob service's
    origin, processors fetch from exactly that origin with the deployment's CA and their token,
    and the blob service serves on the port the origin names with a certificate for its name."""
    svc = _site_settings("blobstore", monkeypatch)
    edge = _site_settings("edge", monkeypatch)
    proc = _site_settings("processor", monkeypatch)
    origin = edge.store.public_url
    assert proc.store.remote_origins == [origin] and origin == "https://blobstore:19443"
    assert origin.rsplit(":", 1)[1] == str(svc.store.serve_port)
    assert svc.store.url == "file:///frames" and SITE["services"]["blobstore"]["command"][1:3] == ["store", "serve"]
    assert '"DNS:blobstore,' in (REPO_ROOT / "infra/compose/init-security.sh").read_text()   # the name processors dial
    assert proc.store.url.startswith("file:///tmp/")   # nothing is shared: its local store stays empty
    assert SITE["services"]["sweeper"]["profiles"] == ["shared-store"]   # the blob service sweeps


def test_the_site_layout_shares_no_frame_volume_and_each_side_gets_only_its_secret(monkeypatch):
    created = _created_role_dirs()
    proc, blob = _site_mounts("processor"), _site_mounts("blobstore")
    assert not any(src == "frames" for src, _s, _ro in proc.values())            # no shared directory
    assert blob["/frames"][0] == "frames" and _mounts("edge")["/frames"][0] == "frames"
    proc_settings = _site_settings("processor", monkeypatch)
    assert proc[str(proc_settings.store.token_file.parent)][1] == "roles/blobstore-client"
    assert proc[str(proc_settings.store.ca_file.parent)][1] == "roles/ca"
    blob_settings = _site_settings("blobstore", monkeypatch)
    assert blob[str(blob_settings.store.server_cert_file.parent)][1] == "roles/blobstore"
    assert blob[str(blob_settings.kafka.credentials_dir)][1] == "roles/kafka-edge"
    for mounts in (proc, blob):
        for target, (src, sub, ro) in mounts.items():
            if src == "security":
                assert sub in created and ro, (target, sub)
    # the server key reaches only the blob service; the processors keep their private key
    holders = {n for n in SITE["services"] if any(sub == "roles/blobstore" for _src, sub, _ro in _site_mounts(n).values())}
    assert holders == {"blobstore"} and proc["/keys"] == ("keys", None, True)
    assert blob_settings.store.monitor_token_file.parent == blob_settings.store.server_cert_file.parent
    # the exporter watches the site with the monitoring token only, and no frame volume either
    exp, exp_settings = _site_mounts("exporter"), _site_settings("exporter", monkeypatch)
    assert exp_settings.store.remote_origins == proc_settings.store.remote_origins
    assert exp[str(exp_settings.store.token_file.parent)][1] == "roles/blobstore-monitor"
    assert exp_settings.store.token_file.name == "monitor.token"
    assert not any(src == "frames" for src, _s, _ro in exp.values())
    assert {sub for _src, sub, _ro in exp.values()} <= created | {None}
    assert SITE["services"]["blobstore"]["user"] == "10001:10001" and "ports" not in SITE["services"]["blobstore"]
