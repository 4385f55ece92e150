#!/bin/bash
# Run once by the influxdb:2.7.12 image right after its first setup
# (DOCKER_INFLUXDB_INIT_MODE=setup), from /docker-entrypoint-initdb.d, with the
# influx CLI already configured with the admin token. Never runs again on an
# existing volume.
# Maps InfluxQL database "<bucket>" / retention policy "autogen" (default) to the
# bucket, so Grafana's InfluxQL queries (db=<bucket>) read it. InfluxDB 2 would
# also answer through an implicit "virtual" mapping; the explicit one is listed by
# `influx v1 dbrp list`, and takes precedence.
set -euo pipefail

influx v1 dbrp create \
    --org "${DOCKER_INFLUXDB_INIT_ORG:?}" \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID:?}" \
    --db "${DOCKER_INFLUXDB_INIT_BUCKET:?}" \
    --rp autogen \
    --default
