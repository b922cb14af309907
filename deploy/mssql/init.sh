#!/bin/bash
# db-init job of docker-compose.yml: on the first start, create the database, the tables
# (sql/mssql/schema.sql), the views and roles, and the logins of the scheduler and Grafana.
# Later starts find the tables and change nothing.
set -euo pipefail

read_secret() {
  local value
  value=$(cat "/run/secrets/$1")
  if [[ "$value" == *"'"* ]]; then
    echo "db-init: the secret $1 contains a single quote; choose another password" >&2
    exit 1
  fi
  printf '%s' "$value"
}

export SQLCMDPASSWORD
SQLCMDPASSWORD=$(read_secret mssql_sa_password)
SCHEDULER_PASSWORD=$(read_secret scheduler_db_password)
GRAFANA_PASSWORD=$(read_secret grafana_db_password)
DB=${COMPRESSOR_AD_DATABASE:-compressor_ad}
sqlcmd() { /opt/mssql-tools18/bin/sqlcmd -S mssql -U sa -C -b "$@"; }

sqlcmd -v db="$DB" -Q "IF DB_ID('\$(db)') IS NULL CREATE DATABASE [\$(db)]"
tables=$(sqlcmd -d "$DB" -h -1 -W -Q "SET NOCOUNT ON; SELECT COUNT(*) FROM sys.tables WHERE name = 'compressor_telemetry'")
if [ "$tables" = "0" ]; then
  for script in schema views roles; do
    echo "db-init: running sql/mssql/$script.sql"
    sqlcmd -d "$DB" -i "/sql/$script.sql"
  done
else
  echo "db-init: tables exist in $DB; schema left as it is"
fi

# Logins (passwords come from the secrets as sqlcmd variables, never from a file in git).
sqlcmd -d "$DB" -v scheduler_pw="$SCHEDULER_PASSWORD" -v grafana_pw="$GRAFANA_PASSWORD" -i /init/logins.sql
echo "db-init: done"
