#!/bin/sh
# Broker container start: password file from the MQTT_PASSWORD_* environment
# (.env), config rendered from the template, TLS key copied so that the
# broker can read it whether it runs as root or as the mosquitto user.
set -eu

# paths and ports are the image's; the tests run this same script natively with their own
CONF=${BROKER_CONF_DIR:-/mosquitto/config}
RUN=${BROKER_RUN_DIR:-/mosquitto/run}
DATA=${BROKER_DATA_DIR:-/mosquitto/data}
TLS=${BROKER_TLS_DIR:-/etc/slowctl/tls}
# people's accounts (`slowctl user`): users.passwd and users.acl, appended when present
ACCOUNTS=${BROKER_ACCOUNTS_DIR:-/etc/slowctl/accounts}
mkdir -p "$RUN" "$DATA"
umask 077

# MQTT_PASSWORD_<USER IN CAPITALS>=secret -> user "<user in lower case>"; every user that is
# not a role is a device service and gets its ACL block from acl-device.template.
# Written beside and then renamed: a reload never lets the broker read half a file.
render_access() {
ROLES=" viewer operator nodered telegraf interlock recorder procedures "
: > "$RUN/passwd.new"
cp "$CONF/acl" "$RUN/acl.new"
env | grep '^MQTT_PASSWORD_[A-Z0-9_]*=' | while read -r line; do
    name=${line%%=*}
    value=${line#*=}
    user=$(echo "${name#MQTT_PASSWORD_}" | tr 'A-Z' 'a-z')
    if [ -z "$value" ]; then
        echo "mosquitto: $name is empty: run 'slowctl init'" >&2
        exit 1
    fi
    printf '%s:%s\n' "$user" "$value" >> "$RUN/passwd.new"
    case "$ROLES" in
        *" $user "*) ;;
        *) printf '\n' >> "$RUN/acl.new"
           sed -e "s#\${DEVICE}#$user#g" "$CONF/acl-device.template" >> "$RUN/acl.new" ;;
    esac
done
[ -s "$RUN/passwd.new" ] || { echo "mosquitto: no MQTT_PASSWORD_* variables: run 'slowctl init'" >&2; exit 1; }
mosquitto_passwd -U "$RUN/passwd.new"
# already hashed by slowctl: appended after -U, which would hash them again
if [ -f "$ACCOUNTS/users.passwd" ]; then cat "$ACCOUNTS/users.passwd" >> "$RUN/passwd.new"; fi
if [ -f "$ACCOUNTS/users.acl" ]; then printf '\n' >> "$RUN/acl.new"; cat "$ACCOUNTS/users.acl" >> "$RUN/acl.new"; fi
if [ "$(id -u)" = 0 ]; then chown mosquitto:mosquitto "$RUN/passwd.new" "$RUN/acl.new"; fi
mv "$RUN/passwd.new" "$RUN/passwd"
mv "$RUN/acl.new" "$RUN/acl"
}
render_access

# `slowctl user` after a change: new files, then SIGHUP (Mosquitto re-reads them; nobody is disconnected)
if [ "${1:-}" = reload ]; then
    kill -HUP "$(cat "$RUN/mosquitto.pid")"
    echo "mosquitto: accounts reloaded"
    exit 0
fi

# the container healthcheck's login, kept out of its command line (mosquitto_sub reads
# options from $XDG_CONFIG_HOME/mosquitto_sub)
mkdir -p "$RUN/healthcheck"
printf -- '-h 127.0.0.1\n-p %s\n-u viewer\n-P %s\n' "${BROKER_MQTT_PORT:-1883}" "${MQTT_PASSWORD_VIEWER:?the healthcheck logs in as viewer: run slowctl init}" \
    > "$RUN/healthcheck/mosquitto_sub"

cp "$TLS/server.crt" "$RUN/server.crt"
cp "$TLS/server.key" "$RUN/server.key"

if [ "$(id -u)" = 0 ]; then
    run_user=mosquitto
    chown -R mosquitto:mosquitto "$RUN" "$DATA"
else
    run_user=$(id -un 2>/dev/null || id -u)
fi

sed -e "s#\${PASSWORD_FILE}#$RUN/passwd#" \
    -e "s#\${ACL_FILE}#$RUN/acl#" \
    -e "s#\${RUN_USER}#$run_user#" \
    -e "s#\${DATA_DIR}#$DATA#" -e "s#\${PID_FILE}#$RUN/mosquitto.pid#" \
    -e "s#\${MQTT_PORT}#${BROKER_MQTT_PORT:-1883}#" -e "s#\${MQTTS_PORT}#${BROKER_MQTTS_PORT:-8883}#" \
    -e "s#\${WS_PORT}#${BROKER_WS_PORT:-9001}#" -e "s#\${BIND}#${BROKER_BIND:-0.0.0.0}#" \
    -e "s#\${TLS_CERT}#$RUN/server.crt#" -e "s#\${TLS_KEY}#$RUN/server.key#" \
    "$CONF/mosquitto.conf.template" > "$RUN/mosquitto.conf"

exec mosquitto -c "$RUN/mosquitto.conf"
