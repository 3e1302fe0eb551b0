"""Admin commands that work on the database directly, not through the API:
``secmail db upgrade``, ``secmail admin rotate-master-key``,
``secmail admin pkcs11-keygen`` and ``secmail audit``.

They are run by an operator on a host that can reach the database (and
the master keys), like a migration job; the webmails never can. Each takes
``--database-url URL`` or ``--data-dir DIR`` (the embedded SQLite
database), defaulting like ``secmail serve``.

Rotating the master key without downtime, with replicas serving
throughout (``--previous-master-key-file`` tells a replica about a key it
should unseal with but not seal with):

1. restart the replicas, one at a time, with ``--master-key-file OLD
   --previous-master-key-file NEW`` (they can now open either);
2. ``secmail admin rotate-master-key --old-key-file OLD --new-key-file NEW``
   re-wraps every data key, in batches of one transaction each;
3. restart the replicas with ``--master-key-file NEW
   --previous-master-key-file OLD``;
4. run the rotation again: it re-wraps what a replica still on OLD sealed
   between steps 2 and 3 (usually nothing) and reports 0 remaining;
5. restart the replicas with ``--master-key-file NEW`` alone, and retire
   OLD. From then on OLD opens nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from secmail.audit import AuditAction, AuditEvent, AuditOutcome
from secmail.errors import SecmailError

__all__ = ["add_admin_commands", "add_database_arguments", "add_pkcs11_arguments", "pkcs11_config"]


def _default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(os.environ.get("SECMAIL_DATA_DIR") or user_data_dir("secmail"))


def add_database_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--database-url",
        help="SQLAlchemy URL; postgresql://... uses psycopg 3 (default: SQLite in the data directory)",
    )
    group.add_argument("--data-dir", help="state directory of the embedded SQLite database")


def add_pkcs11_arguments(p: argparse.ArgumentParser, *, key_label: bool = True) -> None:
    from secmail.keystore.pkcs11 import DEFAULT_KEY_LABEL, PIN_ENV

    p.add_argument(
        "--pkcs11-module", metavar="PATH", help="PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so"
    )
    p.add_argument("--pkcs11-token", metavar="LABEL", help=f"token label (PIN in ${PIN_ENV})")
    if key_label:
        p.add_argument(
            "--pkcs11-key-label",
            metavar="LABEL",
            default=DEFAULT_KEY_LABEL,
            help="label of the AES master key on the token (default %(default)s)",
        )


def pkcs11_config(args: argparse.Namespace, key_label: str | None = None) -> Any:
    """A PKCS11Config from --pkcs11-module/--pkcs11-token and a key label."""
    from secmail.keystore.pkcs11 import PKCS11Config

    if not args.pkcs11_module or not args.pkcs11_token:
        raise SecmailError("a PKCS#11 master key needs --pkcs11-module and --pkcs11-token")
    return PKCS11Config(
        module=args.pkcs11_module,
        token_label=args.pkcs11_token,
        key_label=key_label or args.pkcs11_key_label,
    )


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if getattr(args, "data_dir", None) else _default_data_dir()


def _engine(args: argparse.Namespace) -> Any:
    from secmail.keystore.sql import open_engine

    data_dir = _data_dir(args)
    if args.database_url is None and not (data_dir / "secmail.db").exists():
        raise SecmailError(f"no database in {data_dir} (give --database-url or --data-dir)")
    return open_engine(args.database_url, data_dir=data_dir)


# --- secmail db upgrade ------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from secmail.keystore.migrate import upgrade_database
    from secmail.keystore.sql import open_engine

    engine = open_engine(args.database_url, data_dir=_data_dir(args))
    try:
        before, after = upgrade_database(engine)
    finally:
        engine.dispose()
    if before == after:
        print(f"database schema already at revision {after}")
    else:
        print(f"database schema upgraded from {before or 'empty'} to revision {after}")
    return 0


# --- secmail admin rotate-master-key ----------------------------------------------


def cmd_rotate_master_key(args: argparse.Namespace) -> int:
    from secmail.keystore.masterkey import load_master_key, load_or_create_master_key, master_key_from_env
    from secmail.keystore.pkcs11 import PKCS11KEK
    from secmail.keystore.runtime import DEFAULT_MASTER_KEY_FILE
    from secmail.keystore.seal import KeyEncryptionKey, LocalKEK, Sealer

    data_dir = _data_dir(args)
    if args.database_url is None and not (data_dir / "secmail.db").exists():
        raise SecmailError(f"no database in {data_dir} (give --database-url or --data-dir)")
    new: KeyEncryptionKey
    if args.new_pkcs11_key_label:
        new = PKCS11KEK(pkcs11_config(args, args.new_pkcs11_key_label))
    else:
        new = LocalKEK(load_or_create_master_key(Path(args.new_key_file)))
    old: list[KeyEncryptionKey] = [LocalKEK(load_master_key(Path(p))) for p in args.old_key_file or ()]
    old += [PKCS11KEK(pkcs11_config(args, label)) for label in args.old_pkcs11_key_label or ()]
    if not old:
        from_env = master_key_from_env()
        default = data_dir / DEFAULT_MASTER_KEY_FILE
        if from_env is not None:
            old.append(LocalKEK(from_env))
        elif default.exists():
            old.append(LocalKEK(load_master_key(default)))
        else:
            raise SecmailError("give the current master key: --old-key-file, --old-pkcs11-key-label")
    sealer = Sealer(new, previous_keys=old)
    try:
        return _rotate(args, sealer, data_dir)
    finally:
        for kek in (new, *old):
            if isinstance(kek, PKCS11KEK):
                kek.close()


def _rotate(args: argparse.Namespace, sealer: Any, data_dir: Path) -> int:
    from secmail.keystore.sql import SQLKeyStore

    new_id = sealer.master_key_id
    store = SQLKeyStore(args.database_url, sealer, data_dir=data_dir)
    audit = store.audit_sink()
    try:
        try:
            result = store.rewrap_data_keys(
                batch_size=args.batch_size,
                progress=lambda n: print(f"  {n} data keys re-wrapped", file=sys.stderr),
            )
        except SecmailError as exc:
            audit.record(
                AuditEvent(
                    AuditAction.MASTER_KEY_ROTATE,
                    AuditOutcome.FAILED,
                    caller="local",
                    key_id=new_id,
                    reason=exc.reason.value,
                )
            )
            raise
        audit.record(
            AuditEvent(AuditAction.MASTER_KEY_ROTATE, AuditOutcome.OK, caller="local", key_id=new_id)
        )
    finally:
        store.close()
    print(
        f"re-wrapped {result.rewrapped} data keys under master key {result.master_key_id}; "
        f"{result.under_current} under it now, {result.remaining} under other keys"
    )
    if result.remaining:
        print(
            "some data keys were sealed under another master key meanwhile (a replica not yet "
            "restarted with the new key): restart it, then run this command again",
            file=sys.stderr,
        )
        return 1
    return 0


# --- secmail admin pkcs11-keygen ---------------------------------------------------


def cmd_pkcs11_keygen(args: argparse.Namespace) -> int:
    from secmail.keystore.pkcs11 import generate_master_key

    key_id = generate_master_key(pkcs11_config(args))
    print(f"created master key {args.pkcs11_key_label!r} on token {args.pkcs11_token!r}: key id {key_id}")
    return 0


# --- secmail audit ---------------------------------------------------------------


def _when(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def cmd_audit(args: argparse.Namespace) -> int:
    from secmail.keystore.migrate import check_schema
    from secmail.keystore.sql import SQLAuditSink
    from secmail.mime.addresses import normalise_addr_spec

    user = None
    if args.user:
        user = args.user if args.user == "*" else normalise_addr_spec(args.user)
        if user is None:
            raise SecmailError(f"not a mailbox: {args.user!r}")
    engine = _engine(args)
    try:
        check_schema(engine, auto_upgrade=False)
        events = SQLAuditSink(engine).query(
            since=args.since,
            until=args.until,
            user=user,
            action=AuditAction(args.action) if args.action else None,
            limit=args.limit,
        )
    finally:
        engine.dispose()
    for e in events:
        if args.json:
            print(
                json.dumps(
                    {
                        "at": e.at.isoformat(),
                        "action": e.action.value,
                        "outcome": e.outcome.value,
                        "caller": e.caller,
                        "user": e.user,
                        "key_id": e.key_id,
                        "reason": e.reason,
                    }
                )
            )
        else:
            reason = f"  reason={e.reason}" if e.reason else ""
            print(
                f"{e.at.isoformat(timespec='seconds')}  {e.action.value:17} {e.outcome.value:7} "
                f"caller={e.caller}  user={e.user or '-'}  key={e.key_id or '-'}{reason}"
            )
    return 0


# --- registration ----------------------------------------------------------------


def add_admin_commands(sub: Any) -> None:
    """Add ``db``, ``admin`` and ``audit`` to the ``secmail`` command's
    subparsers (``sub`` from ``ArgumentParser.add_subparsers``)."""
    db = sub.add_parser("db", help="database schema (run on a host with database access)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    p = db_sub.add_parser(
        "upgrade",
        help="apply the schema migrations (safe to run from several hosts at once)",
    )
    add_database_arguments(p)
    p.set_defaults(func=cmd_db_upgrade)

    admin = sub.add_parser("admin", help="master key administration (host with database access)")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    p = admin_sub.add_parser(
        "rotate-master-key",
        help="re-wrap every stored data key under a new master key, without downtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    new = p.add_mutually_exclusive_group(required=True)
    new.add_argument("--new-key-file", help="the new 32-byte master key file (created 0600 if missing)")
    new.add_argument(
        "--new-pkcs11-key-label", metavar="LABEL", help="the new master key on the PKCS#11 token"
    )
    p.add_argument(
        "--old-key-file",
        action="append",
        help="a master key that wraps data keys now (repeatable; default $SECMAIL_MASTER_KEY or "
        "<data-dir>/master.key)",
    )
    p.add_argument(
        "--old-pkcs11-key-label", action="append", metavar="LABEL", help="an old master key on the token"
    )
    add_pkcs11_arguments(p, key_label=False)
    p.add_argument("--batch-size", type=int, default=200, help="data keys per transaction (%(default)s)")
    add_database_arguments(p)
    p.set_defaults(func=cmd_rotate_master_key)

    p = admin_sub.add_parser("pkcs11-keygen", help="create the AES-256 master key on a PKCS#11 token")
    add_pkcs11_arguments(p)
    p.set_defaults(func=cmd_pkcs11_keygen)

    p = sub.add_parser(
        "audit",
        help="query the audit log (reads the database: run on a host with database access)",
        description="Print audit events: who used or changed which key or trust anchor, when, and "
        "the outcome. Reads the database directly, so it runs on an admin host that can reach it.",
    )
    p.add_argument("--since", type=_when, help="from this time, ISO 8601 (UTC unless a zone is given)")
    p.add_argument("--until", type=_when, help="before this time, ISO 8601")
    p.add_argument("--user", help="only events for this mailbox")
    p.add_argument("--action", choices=[a.value for a in AuditAction])
    p.add_argument("--limit", type=int, default=10_000, help="at most this many (the newest)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_database_arguments(p)
    p.set_defaults(func=cmd_audit)
