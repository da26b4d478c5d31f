#!/usr/bin/env bash
# Creates the MLflow tracking database and its owner beside Airflow's metadata database.
#
# The official postgres image runs the files of /docker-entrypoint-initdb.d once, when the data
# directory is empty (first start of the `postgres-db-volume`); later starts skip them. To apply a
# change here to an existing deployment, create the role and database by hand or drop the volume.
#
# Credentials come from the environment that docker-compose.yml passes to the postgres service
# (MLFLOW_DB_USER / MLFLOW_DB_PASSWORD): nothing secret is written in this file. psql variables
# (:"name" / :'value') quote the identifier and the literal, so any password is safe here.
set -euo pipefail

: "${MLFLOW_DB_USER:?MLFLOW_DB_USER must be set for the postgres service}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set for the postgres service}"
MLFLOW_DB_NAME="${MLFLOW_DB_NAME:-mlflow}"

psql -v ON_ERROR_STOP=1 \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v db_user="$MLFLOW_DB_USER" -v db_password="$MLFLOW_DB_PASSWORD" -v db_name="$MLFLOW_DB_NAME" \
  <<'SQL'
CREATE ROLE :"db_user" WITH LOGIN PASSWORD :'db_password';
CREATE DATABASE :"db_name" OWNER :"db_user";
REVOKE ALL ON DATABASE :"db_name" FROM PUBLIC;
SQL

echo "created database ${MLFLOW_DB_NAME} owned by ${MLFLOW_DB_USER}"
