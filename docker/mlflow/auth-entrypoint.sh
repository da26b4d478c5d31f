#!/bin/sh
# rankflow's MLflow in compose: the basic-auth app, configured from the environment at start.
#
# Writes MLflow's auth configuration (default permission READ, the user store in the same
# Postgres database as the tracking store, under its own alembic_version_auth table) to a file
# only this container's user can read, then runs the command (`mlflow server --app-name
# basic-auth ...`). Nothing secret is in the image: the admin's name and password stay in the
# environment (MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD, which MLflow reads itself
# and uses only to create the admin on an empty user store), the database URL comes from
# MLFLOW_BACKEND_STORE_URI. URL-safe passwords only (configparser reads `%` as interpolation).
set -eu
: "${MLFLOW_AUTH_ADMIN_USERNAME:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_BACKEND_STORE_URI:?}"
config="${MLFLOW_AUTH_CONFIG_PATH:-/tmp/rankflow-mlflow-auth/basic_auth.ini}"
umask 077
mkdir -p "$(dirname "$config")"
cat > "$config" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH="$config"
case " $* " in
  *" --app-name basic-auth "* | *" --app-name=basic-auth "*) ;;
  *) echo "refusing to start MLflow without --app-name basic-auth" >&2; exit 1 ;;
esac
exec "$@"
