"""Trust bundles: named, listable, removable, scoped to mail domains, with a
revocation policy (store, application core, gRPC and CLI)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from service_support import Client, error_reason, start
from testpki import PKI, end_entity, make_pki, message

from secmail.errors import InputError, NotFoundError
from secmail.keystore.api import TrustEntry
from secmail.keystore.sql import SQLKeyStore
from secmail.policy import RevocationMode
from secmail.service.app import Secmail
from secmail.v1 import trust_pb2
from secmail.verdict import Banner, Scheme

MakeStore = Callable[..., SQLKeyStore]
NOW = datetime(2026, 5, 1, tzinfo=UTC)


def _entry(
    anchor_id: str, bundle: str, *, anchor: bool = True, domains: tuple[str, ...] = (), policy: str = ""
) -> TrustEntry:
    return TrustEntry(
        anchor_id=anchor_id,
        bundle=bundle,
        scheme=Scheme.SMIME,
        data=b"der " + anchor_id.encode(),
        is_anchor=anchor,
        subject=f"CN={anchor_id}",
        not_before=NOW,
        not_after=None,
        domains=domains,
        revocation_policy=policy,
    )


# --- store ---------------------------------------------------------------------


def test_bundles_are_stored_with_their_scope(store: SQLKeyStore) -> None:
    besancon = ("ac-besancon.fr",)
    stored = store.add_trust(
        [
            _entry("b-root", "besancon", domains=besancon, policy="hard-fail"),
            _entry("b-inter", "besancon", anchor=False, domains=besancon, policy="hard-fail"),
            _entry("n-root", "national"),
        ]
    )
    assert [e.domains for e in stored] == [besancon, besancon, ()]
    assert {e.anchor_id: (e.domains, e.revocation_policy) for e in store.list_trust()} == {
        "b-root": (besancon, "hard-fail"),
        "b-inter": (besancon, "hard-fail"),
        "n-root": ((), ""),
    }
    bundles = {b.name: b for b in store.list_trust_bundles()}
    assert (bundles["besancon"].anchors, bundles["besancon"].intermediates) == (1, 1)
    assert bundles["besancon"].domains == besancon and bundles["besancon"].applies_to("AC-Besancon.fr")
    assert not bundles["besancon"].applies_to("ac-dijon.fr") and bundles["national"].applies_to("x.fr")

    # The last import describes the bundle, for every entry in it.
    store.add_trust([_entry("b-root2", "besancon", domains=("ac-besancon.fr", "ac-dijon.fr"))])
    assert {e.domains for e in store.list_trust("besancon")} == {("ac-besancon.fr", "ac-dijon.fr")}
    assert {e.revocation_policy for e in store.list_trust("besancon")} == {""}


def test_scope_is_normalised_and_checked(store: SQLKeyStore) -> None:
    [e] = store.add_trust(
        [_entry("r", "b", domains=("AC-Besancon.FR.", "ac-besancon.fr"), policy="Hard-Fail")]
    )
    assert (e.domains, e.revocation_policy) == (("ac-besancon.fr",), "hard-fail")
    for bad in ([_entry("x", "b", domains=("not a domain",))], [_entry("x", "b", policy="never")]):
        with pytest.raises(InputError):
            store.add_trust(bad)
    with pytest.raises(InputError, match="disagree"):
        store.add_trust([_entry("x", "c", domains=("a.fr",)), _entry("y", "c", domains=("b.fr",))])
    assert [t.anchor_id for t in store.list_trust()] == ["r"]


def test_removing_bundles_and_their_last_entries(store: SQLKeyStore) -> None:
    store.add_trust([_entry("a1", "one"), _entry("a2", "one"), _entry("b1", "two")])
    removed = store.remove_trust_bundle("one")
    assert [e.anchor_id for e in removed] == ["a1", "a2"]
    assert [b.name for b in store.list_trust_bundles()] == ["two"]
    with pytest.raises(NotFoundError):
        store.remove_trust_bundle("one")
    store.remove_trust("b1")
    assert store.list_trust_bundles() == [] and store.list_trust() == []
    # Moving the only entry of a bundle to another leaves no empty bundle behind.
    store.add_trust([_entry("m", "old")])
    store.add_trust([_entry("m", "new")])
    assert [b.name for b in store.list_trust_bundles()] == ["new"]


# --- application: who trusts what ----------------------------------------------------


@pytest.fixture(scope="module")
def two_pkis() -> tuple[PKI, PKI]:
    return make_pki(), make_pki()


def test_scoped_anchors_serve_only_their_domains(store: SQLKeyStore, two_pkis: tuple[PKI, PKI]) -> None:
    besancon_pki, national_pki = two_pkis
    app = Secmail(store)
    app.import_trust(
        "besancon", besancon_pki.bundle_pem, domains=["ac-besancon.fr"], revocation_policy="hard-fail"
    )
    app.import_trust("national", national_pki.bundle_pem)
    local = end_entity(besancon_pki.intermediate, "prof@ac-besancon.fr")
    national = end_entity(national_pki.intermediate, "dgesco@education.gouv.fr")
    app.import_key("prof@ac-besancon.fr", local.p12(b"pw"), "pw")
    app.import_key("dgesco@education.gouv.fr", national.p12(b"pw"), "pw")

    def banner(signer: str, reader: str) -> Banner:
        msg = message(sender=signer, to=reader)
        signed = app.sign(signer, msg, Scheme.SMIME, opaque=False, header_protection=False)
        return app.verify(reader, signed, None).verdict.banner

    # Revocation is unknown here (no CRL, no network): hard-fail for readers
    # of ac-besancon.fr keeps GREEN away from them, soft-fail elsewhere.
    assert banner("prof@ac-besancon.fr", "eleve@ac-dijon.fr") is not Banner.GREEN  # not trusted there
    assert banner("dgesco@education.gouv.fr", "eleve@ac-dijon.fr") is Banner.GREEN

    besancon_ctx = app.trust_context("eleve@ac-besancon.fr")
    dijon_ctx = app.trust_context("eleve@ac-dijon.fr")
    assert besancon_ctx.revocation is RevocationMode.HARD_FAIL
    assert dijon_ctx.revocation is RevocationMode.SOFT_FAIL
    assert {c.subject for c in besancon_ctx.anchors} == {
        besancon_pki.root.cert.subject,
        national_pki.root.cert.subject,
    }
    assert [c.subject for c in dijon_ctx.anchors] == [national_pki.root.cert.subject]
    assert [c.subject for c in dijon_ctx.intermediates] == [national_pki.intermediate.cert.subject]
    assert [c.subject for c in app.trust_context(None).anchors] == [national_pki.root.cert.subject]


def test_hard_fail_bundle_holds_back_green_for_its_readers(
    store: SQLKeyStore, two_pkis: tuple[PKI, PKI]
) -> None:
    besancon_pki, _ = two_pkis
    app = Secmail(store)
    app.import_trust("besancon", besancon_pki.bundle_pem, domains=["ac-besancon.fr"])
    signer = end_entity(besancon_pki.intermediate, "prof@ac-besancon.fr")
    app.import_key("prof@ac-besancon.fr", signer.p12(b"pw"), "pw")
    signed = app.sign(
        "prof@ac-besancon.fr",
        message(sender="prof@ac-besancon.fr"),
        Scheme.SMIME,
        opaque=False,
        header_protection=False,
    )
    assert app.verify("eleve@ac-besancon.fr", signed, None).verdict.banner is Banner.GREEN
    app.import_trust(
        "besancon", besancon_pki.bundle_pem, domains=["ac-besancon.fr"], revocation_policy="hard-fail"
    )
    assert app.verify("eleve@ac-besancon.fr", signed, None).verdict.banner is not Banner.GREEN


def test_soft_fail_bundle_does_not_weaken_a_hard_fail_service(
    store: SQLKeyStore, two_pkis: tuple[PKI, PKI]
) -> None:
    from secmail.policy import DEFAULT_POLICY
    from secmail.service.app import Settings

    app = Secmail(store, Settings(policy=replace(DEFAULT_POLICY, revocation=RevocationMode.HARD_FAIL)))
    app.import_trust("national", two_pkis[1].bundle_pem, revocation_policy="soft-fail")
    assert app.trust_context("a@b.fr").revocation is RevocationMode.HARD_FAIL


# --- gRPC and CLI --------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    server, c = start(tmp_path / "data")
    yield c
    c.channel.close()
    server.stop(None)


def test_bundles_over_grpc(client: Client, two_pkis: tuple[PKI, PKI]) -> None:
    resp = client.trust.ImportTrustBundle(
        trust_pb2.ImportTrustBundleRequest(
            name="besancon",
            data=two_pkis[0].bundle_pem,
            domains=["AC-Besancon.fr"],
            revocation_policy="hard-fail",
        )
    )
    assert [(list(a.domains), a.revocation_policy) for a in resp.anchors] == [
        (["ac-besancon.fr"], "hard-fail")
    ] * 2
    listed = client.trust.ListTrustAnchors(trust_pb2.ListTrustAnchorsRequest(bundle="besancon")).anchors
    assert {tuple(a.domains) for a in listed} == {("ac-besancon.fr",)}
    [bundle] = client.trust.ListTrustBundles(trust_pb2.ListTrustBundlesRequest()).bundles
    assert (bundle.name, list(bundle.domains), bundle.revocation_policy) == (
        "besancon",
        ["ac-besancon.fr"],
        "hard-fail",
    )
    assert (bundle.anchor_count, bundle.intermediate_count) == (1, 1) and bundle.HasField("updated_at")

    with pytest.raises(grpc.RpcError) as info:
        client.trust.ImportTrustBundle(
            trust_pb2.ImportTrustBundleRequest(
                name="x", data=two_pkis[1].bundle_pem, revocation_policy="sometimes"
            )
        )
    assert (
        info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        and error_reason(info.value) == "INVALID_ARGUMENT"
    )

    removed = client.trust.RemoveTrustBundle(trust_pb2.RemoveTrustBundleRequest(name="besancon")).removed
    assert len(removed) == 2
    assert not client.trust.ListTrustBundles(trust_pb2.ListTrustBundlesRequest()).bundles
    with pytest.raises(grpc.RpcError) as info:
        client.trust.RemoveTrustBundle(trust_pb2.RemoveTrustBundleRequest(name="besancon"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_ca_commands(
    client: Client, two_pkis: tuple[PKI, PKI], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from secmail.cli import main

    bundle = tmp_path / "besancon.pem"
    bundle.write_bytes(two_pkis[0].bundle_pem)
    server = ["--server", client.address]
    assert main(["ca", "import", str(bundle), "--name", "besancon", "--domain", "ac-besancon.fr",
                 "--domain", "ac-dijon.fr", "--revocation", "hard-fail", *server]) == 0  # fmt: skip
    assert main(["ca", "bundles", *server]) == 0
    out = capsys.readouterr().out
    assert (
        "besancon  anchors=1 intermediates=1  domains=ac-besancon.fr,ac-dijon.fr  revocation=hard-fail" in out
    )
    assert main(["ca", "remove-bundle", "besancon", *server]) == 0
    assert capsys.readouterr().out.count("removed ") == 2
    assert main(["ca", "remove-bundle", "besancon", *server]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
