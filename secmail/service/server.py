"""Building and running the gRPC server.

``create_server`` is separate from ``serve`` so tests bind port 0 in
process. ``serve`` runs N worker processes on one port (SO_REUSEPORT): the
crypto is CPU-bound and one Python process uses one core.

Listener rules (``check_listener``): a listener that is not on loopback
needs TLS (``--tls-cert``/``--tls-key``) and a callers file
(``--callers``); without a callers file secmail is in local development
mode, where every caller is admin and webmail for every domain. The
optional ``--health-address`` listener is plaintext on any address, since
it serves grpc.health.v1 and nothing else (the kubelet's gRPC probe cannot
present a client certificate).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from secmail.audit import AuditSink
from secmail.errors import SecmailError
from secmail.keystore.pkcs11 import PKCS11Config
from secmail.service.app import Secmail, Settings
from secmail.service.auth import AccessInterceptor
from secmail.service.config import CallersConfig, ConfigError, load_callers_file
from secmail.service.limits import RateLimiter
from secmail.service.servicer import KeyServicer, MessageSecurityServicer, TrustServicer
from secmail.service.tls import TLSFiles, is_loopback, read_tls_material, server_credentials
from secmail.trust.revocation import RevocationChecker
from secmail.v1 import (
    keys_pb2,
    keys_pb2_grpc,
    message_security_pb2,
    message_security_pb2_grpc,
    trust_pb2,
    trust_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    message_security_pb2.DESCRIPTOR.services_by_name["MessageSecurity"].full_name,
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    trust_pb2.DESCRIPTOR.services_by_name["TrustService"].full_name,
)

#: gRPC framing around the largest message we accept.
_GRPC_OVERHEAD = 1 << 20
#: A health check request is a service name: nothing bigger is read on the
#: plaintext health listener.
_HEALTH_MAX_MESSAGE = 4096


#: Calls one server process handles at once.
DEFAULT_THREADS = 4


@dataclass(frozen=True, slots=True)
class ServerConfig:
    address: str = "127.0.0.1:50051"
    data_dir: Path | None = None
    database_url: str | None = None
    master_key_file: Path | None = None
    #: The master key on a PKCS#11 token instead of a file (PIN from
    #: $SECMAIL_PKCS11_PIN).
    master_key_pkcs11: PKCS11Config | None = None
    #: Older (or upcoming) master keys: unseal only, for rotations.
    previous_master_key_files: tuple[Path, ...] = ()
    workers: int = 1
    threads: int = DEFAULT_THREADS
    #: Run each worker process on a CPU of its own (see :func:`worker_cpus`).
    worker_affinity: bool = False
    settings: Settings = field(default_factory=Settings)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Client certificates are required when set.
    tls_client_ca: Path | None = None
    #: A second, plaintext listener serving grpc.health.v1 only.
    health_address: str | None = None
    #: The callers file (config.py); None: local development mode.
    callers_file: Path | None = None
    #: Fetch OCSP responses and CRLs named in certificates; False: only
    #: the CRLs imported by an admin (air-gapped sites).
    network_revocation: bool = True
    #: Readers' domains whose correspondents' certificates are kept from
    #: GREEN messages (added to the callers file's harvest_domains).
    harvest_domains: tuple[str, ...] = ()

    @property
    def tls(self) -> TLSFiles | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        return TLSFiles(self.tls_cert, self.tls_key, self.tls_client_ca)


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("SECMAIL_DATA_DIR") or user_data_dir("secmail"))


def load_callers(config: ServerConfig) -> CallersConfig | None:
    return load_callers_file(config.callers_file) if config.callers_file is not None else None


def revocation_checkers(*, network: bool) -> tuple[RevocationChecker, ...]:
    """The online revocation sources of one process: OCSP, then the CRLs
    of the distribution points, sharing one fetcher and one cache."""
    if not network:
        return ()
    from secmail.trust.cache import MemoryCache
    from secmail.trust.fetch import HTTPFetcher
    from secmail.trust.ocsp import OCSPChecker
    from secmail.trust.revocation import FetchedCRLChecker

    fetcher = HTTPFetcher()
    cache = MemoryCache()
    return (OCSPChecker(fetcher, cache), FetchedCRLChecker(fetcher, cache))


def build_app(config: ServerConfig, callers: CallersConfig | None = None) -> Secmail:
    from secmail.keystore.runtime import load_sealer, open_keystore
    from secmail.service.harvest import Harvester

    data_dir = config.data_dir or default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Master key: PKCS#11 token, $SECMAIL_MASTER_KEY, or the key file
    # (keystore/runtime.py); the SQLite default is upgraded at start, any
    # other database needs `secmail db upgrade` first.
    sealer = load_sealer(
        data_dir=data_dir,
        master_key_file=config.master_key_file,
        pkcs11=config.master_key_pkcs11,
        previous_key_files=config.previous_master_key_files,
    )
    store = open_keystore(database_url=config.database_url, data_dir=data_dir, sealer=sealer)
    app = Secmail(store, config.settings, audit=store.audit_sink())
    app.revocation_checkers = revocation_checkers(network=config.network_revocation)
    domains = {*config.harvest_domains, *(callers.harvest_domains if callers else ())}
    if domains:
        # Looked up at each use: the sink is the application's (the SQL
        # audit log), whatever replaces it later.
        app.harvester = Harvester(store, domains, audit=lambda: app.audit)
    return app


def create_server(
    address: str,
    app: Secmail,
    *,
    threads: int = DEFAULT_THREADS,
    reuse_port: bool = False,
    tls: TLSFiles | None = None,
    callers: CallersConfig | None = None,
    audit: AuditSink | None = None,
    health_servicer: health.HealthServicer | None = None,
    limiter: RateLimiter | None = None,
) -> tuple[grpc.Server, int]:
    """A server for ``app`` on ``address`` (not started).

    ``callers`` None is the local development mode (see auth.py); denials
    are audited to ``audit``, else to ``app.audit``.
    """
    # gRPC's own cap is set above ours so that an oversized message reaches
    # secmail and gets MESSAGE_TOO_LARGE with its limit; only requests past
    # twice the limit are cut by gRPC itself (RESOURCE_EXHAUSTED).
    limit = 2 * app.settings.max_message_bytes + _GRPC_OVERHEAD
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]

    def audit_sink() -> AuditSink:
        return audit or app.audit

    interceptor = AccessInterceptor(callers, audit=audit_sink, limiter=limiter)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads), options=options, interceptors=[interceptor]
    )
    message_security_pb2_grpc.add_MessageSecurityServicer_to_server(MessageSecurityServicer(app), server)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(app), server)
    trust_pb2_grpc.add_TrustServiceServicer_to_server(TrustServicer(app), server)

    health_servicer = health_servicer or serving_health()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if tls is not None:
        port = server.add_secure_port(address, server_credentials(tls))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port


def serving_health() -> health.HealthServicer:
    """A health servicer reporting every secmail service as SERVING."""
    servicer = health.HealthServicer()
    for name in (*SERVICE_NAMES, ""):
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


def create_health_server(
    address: str, health_servicer: health.HealthServicer, *, reuse_port: bool = False
) -> tuple[grpc.Server, int]:
    """A plaintext server with grpc.health.v1 only (not started)."""
    options = [
        ("grpc.max_receive_message_length", _HEALTH_MAX_MESSAGE),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=options)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port


def check_listener(config: ServerConfig) -> str | None:
    """Why ``config`` must not start, or None."""
    if (config.tls_cert is None) != (config.tls_key is None):
        return "--tls-cert and --tls-key go together"
    if config.tls_client_ca is not None and config.tls is None:
        return "--tls-client-ca needs --tls-cert and --tls-key"
    if config.health_address is not None and config.health_address == config.address:
        return "--health-address must differ from --address"
    if is_loopback(config.address):
        return None
    if config.tls is None:
        # Plaintext is only allowed where nothing else can reach it.
        return (
            f"refusing to listen on {config.address} without TLS: give --tls-cert and --tls-key "
            "(and --tls-client-ca), or use a loopback address"
        )
    if config.callers_file is None:
        # Without a callers file every caller is an admin (development
        # mode): never on an address others can reach.
        return (
            f"refusing to listen on {config.address} without --callers: without a callers file "
            "every caller is an admin (local development mode, loopback only)"
        )
    return None


def _warnings(config: ServerConfig, callers: CallersConfig | None) -> list[str]:
    notes: list[str] = []
    if callers is None:
        notes.append(
            "no --callers file: local development mode, every caller is admin and webmail for all domains"
        )
    elif config.tls_client_ca is None:
        unmatched = [c.name for c in callers.callers if c.by_certificate]
        if unmatched:
            notes.append(
                "callers identified by certificate can never connect without --tls-client-ca: "
                + ", ".join(unmatched)
            )
    if not config.network_revocation:
        notes.append("--no-network-revocation: only imported CRLs are used for revocation")
    return notes


def prepare(config: ServerConfig) -> CallersConfig | None:
    """Check everything ``serve`` needs before starting anything.

    Raises :class:`ConfigError` with a message for the operator.
    """
    problem = check_listener(config)
    if problem is not None:
        raise ConfigError(problem)
    callers = load_callers(config)
    if config.tls is not None:
        read_tls_material(config.tls)
    return callers


def worker_cpus(workers: int) -> list[int] | None:
    """The CPU for each of ``workers`` worker processes, in turn over the
    CPUs this process may run on; None where affinity cannot be set.

    Like nginx's ``worker_cpu_affinity auto``: a worker that stays on one
    CPU keeps its caches warm, where the scheduler would otherwise move the
    workers between CPUs as other processes (the clients, on a benchmark
    host) come and go. Measured on the 2-core development VM under the
    benchmark's S/MIME load: 7-13 % less CPU per call, 9-21 % more calls per
    second. For dedicated hosts: on CPUs shared with other loads, a pinned
    worker cannot move away from them.
    """
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(getaffinity(0))
    return [allowed[i % len(allowed)] for i in range(workers)]


def _run_worker(
    config: ServerConfig, reuse_port: bool, app: Secmail | None = None, cpu: int | None = None
) -> None:
    if cpu is not None:
        # Before any thread exists: gRPC's and the handlers' threads inherit it.
        os.sched_setaffinity(0, {cpu})
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    callers = load_callers(config)
    if app is None:
        app = build_app(config, callers)
    health_servicer = serving_health()
    server, port = create_server(
        config.address,
        app,
        threads=config.threads,
        reuse_port=reuse_port,
        tls=config.tls,
        callers=callers,
        health_servicer=health_servicer,
    )
    servers = [server]
    if config.health_address is not None:
        health_server, _ = create_health_server(config.health_address, health_servicer, reuse_port=reuse_port)
        servers.append(health_server)
    for s in servers:
        s.start()
    mode = "plaintext"
    if config.tls is not None:
        mode = "TLS, client certificates required" if config.tls_client_ca else "TLS"
    log.info("secmail listening on %s (%s, port %d, pid %d)", config.address, mode, port, os.getpid())
    if config.health_address is not None:
        log.info("health checks (plaintext) on %s", config.health_address)

    def _stop(signum: int, frame: object) -> None:
        # NOT_SERVING first, so probes and balancers stop sending calls
        # while the ones under way finish.
        health_servicer.enter_graceful_shutdown()
        for s in servers:
            s.stop(grace=5)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for s in servers:
        s.wait_for_termination()


def serve(config: ServerConfig, *, err: Callable[[str], None] | None = None) -> int:
    def report(text: str) -> None:
        if err is not None:
            err(text)
        else:
            print(text, file=sys.stderr)

    try:
        callers = prepare(config)
    except ConfigError as exc:
        report(f"secmail serve: {exc.message}")
        return 2
    for note in _warnings(config, callers):
        report(f"secmail serve: warning: {note}")
    # Create the database and the master key once, before workers race for
    # it; a database at a schema this version cannot use stops here.
    try:
        app = build_app(config, callers)
    except SecmailError as exc:
        report(f"secmail serve: {exc.message}")
        return 1
    if config.workers <= 1:
        _run_worker(config, reuse_port=False, app=app)
        return 0
    # Each worker opens its own store after the spawn: the parent's
    # connections (a pool) are not kept open beside them.
    close = getattr(app.store, "close", None)
    if close is not None:
        close()
    cpus: list[int | None] = [None] * config.workers
    if config.worker_affinity:
        pinned = worker_cpus(config.workers)
        if pinned is None:
            report("secmail serve: warning: --worker-affinity: this system cannot pin processes to CPUs")
        else:
            cpus = list(pinned)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_run_worker, args=(config, True, None, cpu), daemon=False) for cpu in cpus]
    for p in procs:
        p.start()

    def _forward(signum: int, frame: object) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    for p in procs:
        p.join()
    return 0
