#!/bin/sh
# Refuses to go on while a secret in .env still holds the change-me placeholder of .env.example.
#
# A placeholder is public (it is in the repository): a placeholder JWT secret lets anyone forge an
# admin token, a placeholder password opens the database, Redis or MLflow to anyone who read the
# file; a placeholder API key opens the ranking service. The `secrets-check` one-shot runs this
# before postgres, redis, minio, mlflow and the ranking service start (so no volume is ever
# initialised with a placeholder password) and airflow-init runs it first.
#
# Looks at every variable of its environment, so a placeholder pasted into a URL or a connection's
# JSON is caught too. Prints the variables' NAMES only, never their values. Exit 0: no
# placeholder; exit 1: placeholders (or a JWT secret shorter than 32 characters) found.
set -eu

PLACEHOLDER="${RANKFLOW_PLACEHOLDER:-change-me}"
MIN_JWT_SECRET_LENGTH=32

found=""
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*$/\1/p' | sort -u); do
  [ "$name" = RANKFLOW_PLACEHOLDER ] && continue
  eval "value=\${$name-}"
  case "$value" in
    *"$PLACEHOLDER"*) found="$found $name" ;;
  esac
done

if [ -n "$found" ]; then
  echo "refusing to start: these variables still hold the '$PLACEHOLDER' placeholder of .env.example:" >&2
  for name in $found; do echo "  $name" >&2; done
  echo "Put real secrets in .env (e.g. \`openssl rand -hex 24\`; see .env.example and docs/security.md)." >&2
  exit 1
fi

jwt_secret="${AIRFLOW__API_AUTH__JWT_SECRET-}"
if [ -n "$jwt_secret" ] && [ "${#jwt_secret}" -lt "$MIN_JWT_SECRET_LENGTH" ]; then
  echo "refusing to start: AIRFLOW__API_AUTH__JWT_SECRET is shorter than $MIN_JWT_SECRET_LENGTH characters" >&2
  echo "(it signs every API token; generate one with \`openssl rand -hex 32\`)." >&2
  exit 1
fi

echo "secrets check: no placeholder secrets"
