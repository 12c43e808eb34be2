"""Registers each role's SCRAM credentials on the local broker and grants its ACLs.

Run by ``infra/local/kafka.sh up`` after the broker listens (``python -m
pipeline.ops.kafka_provision``). It connects to the broker's internal listener with the
broker's own certificate (mutual TLS, the super user ``broker``): that identity exists before
any SCRAM credential does, so provisioning works on a fresh data directory and on one formatted
before a role was added, and is idempotent (credentials are upserted, existing ACLs stay).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pipeline.ops.acls import CLIENT_ROLES, acl_policy, apply_acls
from pipeline.ops.kafka_clients import MECHANISM, role_password
from pipeline.settings import SECURITY_DIR, Settings, load_settings

ITERATIONS = 8192


def internal_admin(s: Settings):
    """An admin client on the internal listener, authenticated by the broker's certificate.
    Where: FLOW_KAFKA_INTERNAL_BOOTSTRAP (default 127.0.0.1:$FLOW_KAFKA_INTERNAL_PORT, 19094) and
    FLOW_KAFKA_BROKER_PEM (default the local stack's broker.pem)."""
    from confluent_kafka.admin import AdminClient

    bootstrap = os.environ.get("FLOW_KAFKA_INTERNAL_BOOTSTRAP",
                               f"127.0.0.1:{os.environ.get('FLOW_KAFKA_INTERNAL_PORT', '19094')}")
    pem = os.environ.get("FLOW_KAFKA_BROKER_PEM", str(SECURITY_DIR / "kafka" / "broker.pem"))
    return AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SSL",
                        "ssl.ca.location": str(s.kafka.ca_file), "ssl.certificate.location": pem,
                        "ssl.key.location": pem, "socket.timeout.ms": 10000})


def upsert_credentials(admin, s: Settings, roles: tuple[str, ...], timeout: float = 30) -> None:
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS)
    ups = [UserScramCredentialUpsertion(r, info, role_password(s.kafka, r).encode()) for r in roles]
    for f in admin.alter_user_scram_credentials(ups, request_timeout=timeout).values():
        f.result()


def provision(s: Settings, attempts: int = 30) -> int:
    """Credentials for every role with a password file, then the ACLs of the settings' topics."""
    roles = tuple(r for r in ("admin", *CLIENT_ROLES) if (Path(s.kafka.credentials_dir) / f"{r}.password").exists())
    admin = internal_admin(s)
    last: Exception | None = None
    for _ in range(attempts):   # the broker may still be electing itself controller
        try:
            upsert_credentials(admin, s, roles)
            break
        except Exception as e:  # noqa: BLE001 - retried, then reported
            last = e
            time.sleep(1)
    else:
        raise RuntimeError(f"could not register Kafka credentials: {last}")
    return apply_acls(admin, acl_policy(s))


def main() -> int:
    s = load_settings()
    if s.kafka.security_protocol != "SASL_SSL":
        return 0
    n = provision(s)
    print(f"[stack] kafka: {MECHANISM} credentials registered, {n} ACLs granted", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
