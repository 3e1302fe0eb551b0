"""Revocation through the gRPC API: the server's OCSP and CRL-fetch
checkers (secmail/trust), against a real ``openssl ocsp`` responder on
loopback, and ``--no-network-revocation``.

The peers are the trust tests' (tests/trust/revocation_peers.py); openssl
stamps its responses with the real clock, so certificates are made valid
around now and verdicts are judged now.
"""

from __future__ import annotations

import itertools
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trust"))

from access_support import Running, Stubs, running
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID
from revocation_peers import LOOPBACK, IndexEntry, OpenSSLResponder, dead_port, free_port
from testpki import message
from trust_pki import CertSpec, Issued, ec_key, issue, make_crl, name

from secmail.message import SMIMESigningKey, sign_message
from secmail.policy import DEFAULT_POLICY, RevocationMode
from secmail.service.app import Settings
from secmail.v1 import message_security_pb2, trust_pb2, verdict_pb2

V = verdict_pb2
HARD_FAIL = Settings(policy=replace(DEFAULT_POLICY, name="hard-fail", revocation=RevocationMode.HARD_FAIL))

pytestmark = pytest.mark.interop


@dataclass(frozen=True)
class Peers:
    now: datetime
    root: Issued
    signers: dict[str, Issued]
    responder: OpenSSLResponder


def _aia(url: str) -> x509.AuthorityInformationAccess:
    return x509.AuthorityInformationAccess(
        [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))]
    )


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: these tests run `openssl ocsp` as the responder")
    now = datetime.now(UTC).replace(microsecond=0)
    window = {"not_before": now - timedelta(days=1), "not_after": now + timedelta(days=30)}
    root = issue(CertSpec(name("Wiring Root CA"), ca=True, **window), ec_key(), None)
    port = free_port()
    urls = {"good": f"http://{LOOPBACK}:{port}/", "revoked": f"http://{LOOPBACK}:{port}/"}
    urls["unreachable"] = f"http://{LOOPBACK}:{dead_port()}/"
    signers = {
        label: issue(
            CertSpec(
                name(label),
                emails=(f"{label}@ac-besancon.fr",),
                extra=((_aia(url), False),),
                **window,
            ),
            ec_key(),
            root,
        )
        for label, url in urls.items()
    }
    entries = [
        IndexEntry(signers["good"].cert),
        IndexEntry(signers["unreachable"].cert),
        IndexEntry(signers["revoked"].cert, revoked_at=now - timedelta(hours=1)),
    ]
    responder = OpenSSLResponder(
        tmp_path_factory.mktemp("ocsp"), port=port, ca=root.cert, signer=root, entries=entries
    )
    try:
        yield Peers(now, root, signers, responder)
    finally:
        responder.stop()


def _signed(peers: Peers, label: str) -> bytes:
    signer = peers.signers[label]
    address = f"{label}@ac-besancon.fr"
    key = SMIMESigningKey(signer.cert, signer.key, (peers.root.cert,), (address,))
    return sign_message(message(sender=address), key, at=datetime.now(UTC))


class StartServer(Protocol):
    def __call__(
        self, settings: Settings | None = None, *, network: bool = True
    ) -> tuple[Running, Stubs]: ...


@pytest.fixture
def start_server(tmp_path: Path, peers: Peers) -> Iterator[StartServer]:
    """Servers trusting the test root; each has its own checkers and cache,
    as each server process does."""
    numbers = itertools.count()
    with ExitStack() as stack:

        def start(settings: Settings | None = None, *, network: bool = True) -> tuple[Running, Stubs]:
            data_dir = tmp_path / f"data{next(numbers)}"
            run = stack.enter_context(running(data_dir, settings=settings, network_revocation=network))
            stubs = run.channel()
            root_pem = peers.root.cert.public_bytes(Encoding.PEM)
            stubs.trust.ImportTrustBundle(trust_pb2.ImportTrustBundleRequest(name="wiring", data=root_pem))
            return run, stubs

        yield start


def _verdict(stubs: Stubs, msg: bytes) -> verdict_pb2.Verdict:
    return stubs.messages.Verify(
        message_security_pb2.VerifyRequest(user="reader@ac-besancon.fr", message=msg)
    ).verdict


def test_revoked_signer_is_red_and_a_good_one_green(peers: Peers, start_server: StartServer) -> None:
    _, stubs = start_server()
    before = peers.responder.requests_received()
    revoked = _verdict(stubs, _signed(peers, "revoked"))
    assert revoked.banner == V.BANNER_RED
    assert V.REASON_CERT_REVOKED in revoked.signers[0].reasons
    good = _verdict(stubs, _signed(peers, "good"))
    assert good.banner == V.BANNER_GREEN, list(good.reasons)
    assert peers.responder.requests_received() == before + 2


def test_hard_fail_needs_an_answer(peers: Peers, start_server: StartServer) -> None:
    _, stubs = start_server(HARD_FAIL)
    # GREEN under hard-fail can only come from the responder's "good".
    good = _verdict(stubs, _signed(peers, "good"))
    assert good.banner == V.BANNER_GREEN, list(good.reasons)
    unreachable = _verdict(stubs, _signed(peers, "unreachable"))
    assert unreachable.banner == V.BANNER_YELLOW
    assert list(unreachable.signers[0].reasons) == [V.REASON_REVOCATION_UNKNOWN]


def test_no_network_revocation_asks_no_one(peers: Peers, start_server: StartServer) -> None:
    before = peers.responder.requests_received()
    run, soft = start_server(network=False)
    assert run.app.revocation_checkers == ()
    # Nothing says it is revoked, and soft-fail accepts "unknown".
    assert _verdict(soft, _signed(peers, "revoked")).banner == V.BANNER_GREEN
    _, hard = start_server(HARD_FAIL, network=False)
    verdict = _verdict(hard, _signed(peers, "good"))
    assert verdict.banner == V.BANNER_YELLOW
    assert list(verdict.signers[0].reasons) == [V.REASON_REVOCATION_UNKNOWN]
    assert peers.responder.requests_received() == before
    # An imported CRL is what an air-gapped site has, and it is used.
    crl = make_crl(
        peers.root,
        [peers.signers["revoked"].cert],
        this_update=peers.now - timedelta(hours=1),
        next_update=peers.now + timedelta(days=1),
    )
    soft.trust.ImportCRL(trust_pb2.ImportCRLRequest(data=crl.public_bytes(Encoding.DER)))
    revoked = _verdict(soft, _signed(peers, "revoked"))
    assert revoked.banner == V.BANNER_RED
    assert V.REASON_CERT_REVOKED in revoked.signers[0].reasons
