"""Run x509-limbo test cases through secmail's ``validate_chain``.

Used two ways:

- imported by ``test_limbo.py`` for :func:`run_case` (the mapping from a
  limbo case to a ``validate_chain`` call);
- run as a script (``python limbo_runner.py``) by ``test_limbo.py`` in a
  child process, so a case that hangs can be killed and reported instead
  of hanging the test session. It reads ``{"limbo": path, "ids": [...]}``
  on stdin and writes one JSON line per event: ``{"start": id}`` before a
  case, then ``{"id", "actual", "detail", "seconds"}`` after it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from secmail.trust.path import ChainOutcome, validate_chain

Case = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    #: "SUCCESS" or "FAILURE", as limbo's expected_result; "ERROR" when
    #: something raised (counted as a failure of the case, never a crash).
    actual: str
    detail: str


def _certs(pems: list[str]) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(pem.encode()) for pem in pems]


def _time(case: Case) -> datetime:
    raw = case.get("validation_time")
    # limbo: null means "now".
    return datetime.now(UTC) if raw is None else datetime.fromisoformat(raw)


def run_case(case: Case) -> CaseOutcome:
    try:
        return _run_case(case)
    except Exception as error:
        return CaseOutcome("ERROR", f"{type(error).__name__}: {error}")


def _run_case(case: Case) -> CaseOutcome:
    leaf = x509.load_pem_x509_certificate(case["peer_certificate"].encode())
    intermediates = _certs(case["untrusted_intermediates"])
    anchors = _certs(case["trusted_certs"])
    crls = [x509.load_pem_x509_crl(pem.encode()) for pem in case["crls"]]
    if case["signature_algorithms"]:
        return CaseOutcome("ERROR", "signature_algorithms constraints are not supported")
    common: dict[str, Any] = {
        "at": _time(case),
        "max_depth": case["max_chain_depth"],
        "crls": crls,
        # A case that hands us CRLs expects them to be checked; with CRLs
        # at hand, a status we cannot establish is a failure (hard-fail).
        "require_revocation": bool(crls),
        "key_usages": case["key_usage"],
    }
    if case["extended_key_usage"]:
        common["extended_key_usages"] = case["extended_key_usage"]

    outcomes: list[ChainOutcome] = []
    if case["validation_kind"] == "SERVER":
        peer = case["expected_peer_name"]
        if peer is None:
            return CaseOutcome("ERROR", "server case without expected_peer_name")
        if peer["kind"] == "DNS":
            outcomes.append(
                validate_chain(
                    leaf, intermediates, anchors, purpose="server", dns_name=peer["value"], **common
                )
            )
        elif peer["kind"] == "IP":
            outcomes.append(
                validate_chain(leaf, intermediates, anchors, purpose="server", ip=peer["value"], **common)
            )
        else:
            return CaseOutcome("ERROR", f"unsupported server peer kind {peer['kind']}")
    else:
        names = case["expected_peer_names"] or []
        emails = [n["value"] for n in names if n["kind"] == "RFC822"]
        if len(emails) != len(names):
            return CaseOutcome("ERROR", "client peer names other than RFC822 are not supported")
        # Every expected name must be bound to the certificate.
        for email in emails or [None]:
            outcomes.append(
                validate_chain(leaf, intermediates, anchors, purpose="client", email=email, **common)
            )
    failed = [o for o in outcomes if not o.ok]
    if failed:
        reasons = ", ".join(r.code for r in failed[0].reasons)
        return CaseOutcome("FAILURE", f"[{reasons}] {failed[0].detail}")
    return CaseOutcome("SUCCESS", outcomes[0].detail)


def _main() -> None:
    request = json.load(sys.stdin)
    with open(request["limbo"], encoding="utf-8") as handle:
        cases = {case["id"]: case for case in json.load(handle)["testcases"]}
    for case_id in request["ids"]:
        print(json.dumps({"start": case_id}), flush=True)
        start = time.perf_counter()
        outcome = run_case(cases[case_id])
        print(
            json.dumps(
                {
                    "id": case_id,
                    "actual": outcome.actual,
                    "detail": outcome.detail,
                    "seconds": time.perf_counter() - start,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    _main()
