"""Kafka client configuration for every component, from the typed settings and the component's
role: one place decides how a client authenticates, so no component can forget it.

Each role is a SCRAM principal of its own (username = role) whose password sits in
``kafka.credentials_dir/<role>.password`` (0600; infra/local/security.sh creates them). A
deployment mounts only the file of the role it runs, so an edge cannot act as a processor.
"""
from __future__ import annotations

import ssl
import stat
from pathlib import Path
from typing import Any

from pipeline.settings import ConfigError, KafkaRole, KafkaSettings, Settings

MECHANISM = "SCRAM-SHA-512"


def _kafka(s: Settings | KafkaSettings) -> KafkaSettings:
    return s if isinstance(s, KafkaSettings) else s.kafka


def role_password(k: KafkaSettings, role: KafkaRole) -> str:
    """The role's password; a clear error when the file is missing, empty or readable by others."""
    path = Path(k.credentials_dir) / f"{role}.password"
    try:
        st = path.stat()
        secret = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"kafka: no credentials for role {role!r} at {path} ({e.strerror}); "
                          f"`flowctl stack up` creates them on the local stack") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"kafka: {path} is readable by other users; chmod 600 it")
    if not secret:
        raise ConfigError(f"kafka: {path} is empty")
    return secret


def _ca(k: KafkaSettings) -> str:
    if not Path(k.ca_file).is_file():
        raise ConfigError(f"kafka: CA certificate {k.ca_file} not found; `flowctl stack up` creates it on the "
                          f"local stack (or set kafka.ca_file)")
    return str(k.ca_file)


def client_config(s: Settings | KafkaSettings, role: KafkaRole, **extra: Any) -> dict[str, Any]:
    """confluent-kafka (librdkafka) configuration: bootstrap servers plus the role's security."""
    k = _kafka(s)
    conf: dict[str, Any] = {"bootstrap.servers": k.bootstrap}
    if k.security_protocol == "SASL_SSL":
        conf.update({"security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM, "sasl.username": role,
                     "sasl.password": role_password(k, role), "ssl.ca.location": _ca(k),
                     "ssl.endpoint.identification.algorithm": "https"})
    conf.update(extra)
    return conf


def faust_credentials(s: Settings | KafkaSettings, role: KafkaRole) -> Any:
    """faust (aiokafka) credentials for the same role, or None on a PLAINTEXT development stack."""
    import faust
    from faust.types.auth import SASLMechanism

    k = _kafka(s)
    if k.security_protocol != "SASL_SSL":
        return None
    ctx = ssl.create_default_context(cafile=_ca(k))
    creds = faust.SASLCredentials(username=role, password=role_password(k, role), ssl_context=ctx,
                                  mechanism=SASLMechanism.SCRAM_SHA_512)
    return creds


__all__ = ["client_config", "faust_credentials", "role_password", "MECHANISM"]
