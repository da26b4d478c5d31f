#!/bin/sh
# rankflow's Redis in compose: writes the ACL users from the environment, then hands over to the
# image's own entrypoint (which drops to the redis user). The rules are those of
# include/rankflow/store/acl.py (tests/unit/deploy/test_compose.py keeps them identical); the
# passwords are stored hashed, in a file only the redis user can read, rewritten on every start.
set -eu
: "${REDIS_WRITER_PASSWORD:?}" "${REDIS_READER_PASSWORD:?}" "${REDIS_ADMIN_PASSWORD:?}" "${REDIS_LOGGER_PASSWORD:?}"
prefix="${RANKFLOW_REDIS_KEY_PREFIX:-rf}"
acl=/tmp/rankflow-users.acl
hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
umask 077
{
  echo "user default off resetpass resetkeys resetchannels -@all"
  echo "user rankflow-writer on #$(hash "$REDIS_WRITER_PASSWORD") resetkeys ~${prefix}:* resetchannels +@all -@dangerous +info -script|flush -script|kill -script|debug -function -fcall -fcall_ro"
  echo "user rankflow-reader on #$(hash "$REDIS_READER_PASSWORD") resetkeys %R~${prefix}:* resetchannels -@all +@read +@connection -@dangerous +evalsha_ro +eval_ro +script|exists"
  echo "user rankflow-admin on #$(hash "$REDIS_ADMIN_PASSWORD") ~* &* +@all"
  # the ranking service's serving log: XADD to the rf:log:* streams only (it cannot read them)
  echo "user rankflow-logger on #$(hash "$REDIS_LOGGER_PASSWORD") resetkeys %W~${prefix}:log:* resetchannels -@all +@connection +xadd"
} > "$acl"
if [ "$(id -u)" = 0 ]; then chown redis:redis "$acl"; fi
unset REDIS_WRITER_PASSWORD REDIS_READER_PASSWORD REDIS_ADMIN_PASSWORD REDIS_LOGGER_PASSWORD
exec docker-entrypoint.sh "$@" --aclfile "$acl"
