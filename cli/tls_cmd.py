"""`smr tls init|issue|revoke`: a local certificate authority for trying TLS.

`init` makes a CA in a directory with a certificate for each member and one client
(`smr-client-admin`); `issue` adds a certificate (a member's, or a client's: one per client, so
that each can be revoked alone); `revoke` adds one to the revocation list, which running members
re-read within a second, closing that certificate's connections. A production cluster would use
its own CA; these files are what the `[tls]` section of a configuration points to
(docs/how-to/tls.md).
"""

from __future__ import annotations

import sys

import click


def _fail(e: Exception) -> None:
    click.echo(f"smr tls: {e}", err=True)
    sys.exit(2)


@click.group()
def tls() -> None:
    """A local certificate authority for TLS clusters."""


@tls.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--members",
    default=3,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Member certificates smr-member-1..N.",
)
@click.option(
    "--client",
    "clients",
    multiple=True,
    default=["admin"],
    show_default=True,
    help="Client certificates smr-client-NAME (repeatable).",
)
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 36500))
def init(directory: str, members: int, clients: tuple[str, ...], days: int) -> None:
    """Make a CA in DIRECTORY (kept if there is one) and certificates for members and clients."""
    from smr.transport import tls as t

    try:
        t.init_ca(directory)
        made = [t.issue(directory, t.member_name(m), days=days)[0] for m in range(1, members + 1)]
        made += [t.issue(directory, t.CLIENT_PREFIX + c, days=days)[0] for c in clients]
    except (t.TlsError, ValueError, OSError) as e:
        _fail(e)
    click.echo(f"CA: {directory}/ca.crt (its key ca.key stays here); revocation list crl.pem")
    for path in made:
        click.echo(f"issued {path}")


@tls.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--member", "is_member", is_flag=True, help="NAME is a member id.")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 36500))
def issue(directory: str, name: str, is_member: bool, days: int) -> None:
    """A certificate for client NAME (smr-client-NAME), or with --member for member NAME."""
    from smr.transport import tls as t

    if is_member and not name.isdigit():
        _fail(ValueError(f"--member takes a member id, not {name!r}"))
    cn = t.member_name(int(name)) if is_member else t.CLIENT_PREFIX + name
    try:
        cert, key = t.issue(directory, cn, days=days)
    except (t.TlsError, ValueError, OSError) as e:
        _fail(e)
    click.echo(f"issued {cert} (key {key})")


@tls.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--member", "is_member", is_flag=True, help="NAME is a member id.")
def revoke(directory: str, name: str, is_member: bool) -> None:
    """Revoke client NAME's certificate (or with --member, member NAME's)."""
    from smr.transport import tls as t

    cn = t.member_name(int(name)) if is_member and name.isdigit() else t.CLIENT_PREFIX + name
    try:
        serial = t.revoke(directory, cn)
    except (t.TlsError, ValueError, OSError) as e:
        _fail(e)
    click.echo(
        f"revoked {cn} (serial {serial:x}) in {directory}/crl.pem; members holding this list "
        "refuse it within a second"
    )
