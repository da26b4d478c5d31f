"""Redis access control: the users rankflow needs and the least each of them may do.

Three users (four with the serving log's) share one server. ``writer`` publishes, repairs and
monitors: any command on the namespace's keys except the ``@dangerous`` ones (no
``FLUSHALL``/``FLUSHDB``, ``CONFIG``, ``DEBUG``, ``KEYS``, ``SHUTDOWN``, ``ACL``, ``MONITOR``),
no script or function cache flush, no pub/sub; it keeps ``INFO`` because the memory check before
a publication reads ``used_memory`` and ``maxmemory`` from it. ``reader`` (the app's services,
the Ranking page, ``rankflow lookup``) may only read keys of the namespace: ``@read`` commands
and the read-only script calls ``EVALSHA_RO``/``EVAL_RO``, whose scripts Redis refuses to let
write. ``logger`` (the ranking service's serving log, optional) may only ``XADD`` to the
namespace's ``log:`` streams: it can neither read them nor touch any other key. ``admin`` (an
operator, the tests' clean-up) may do anything. The ``default`` user is disabled, so a client
without credentials can do nothing but authenticate.

The same rules feed the embedded server's ACL file and the compose stack's
(``docker/redis/acl-entrypoint.sh``); ``docs/security.md`` lists them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

WRITER_RULES = (
    "resetkeys ~{prefix}:* resetchannels +@all -@dangerous +info "
    "-script|flush -script|kill -script|debug -function -fcall -fcall_ro"
)
READER_RULES = (
    "resetkeys %R~{prefix}:* resetchannels -@all +@read +@connection -@dangerous "
    "+evalsha_ro +eval_ro +script|exists"
)
LOGGER_RULES = "resetkeys %W~{prefix}:log:* resetchannels -@all +@connection +xadd"
ADMIN_RULES = "~* &* +@all"
DEFAULT_USER_LINE = "user default off resetpass resetkeys resetchannels -@all"


@dataclass(frozen=True)
class Credentials:
    """One ACL user's name and password, as a client URL carries them."""

    username: str
    password: str


def url_credentials(url: str | None) -> Credentials | None:
    """Return the user and password a ``redis://`` URL carries (None without them)."""
    if not url:
        return None
    parsed = urlparse(url)
    if not parsed.username or parsed.password is None:
        return None
    return Credentials(unquote(parsed.username), unquote(parsed.password))


def password_hash(password: str) -> str:
    """The ``#<sha256>`` form of a password, so an ACL file never holds one in clear."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def user_line(user: Credentials, rules: str, prefix: str) -> str:
    """One ``user`` line of an ACL file: enabled, its hashed password, then its rules."""
    return f"user {user.username} on {password_hash(user.password)} {rules.format(prefix=prefix)}"


def acl_file_text(
    prefix: str,
    *,
    writer: Credentials,
    reader: Credentials,
    admin: Credentials,
    logger: Credentials | None = None,
) -> str:
    """The ACL file of a server holding one rankflow namespace: three or four users, no default."""
    users = [(writer, WRITER_RULES), (reader, READER_RULES), (admin, ADMIN_RULES)]
    if logger is not None:
        users.append((logger, LOGGER_RULES))
    names = {user.username for user, _ in users}
    if len(names) != len(users) or "default" in names:
        raise ValueError("the writer, reader, admin and logger need distinct names, none 'default'")
    lines = [DEFAULT_USER_LINE, *(user_line(user, rules, prefix) for user, rules in users)]
    return "\n".join(lines) + "\n"
