#!/bin/sh
# The broker container's start (eclipse-mosquitto runs this as root; Mosquitto then drops to
# its user, mosquitto): the persistence directory and the password file belong to that user,
# as deploy/mosquitto/mosquitto.conf expects. Any command runs after it, so
#   docker compose run --rm mosquitto mosquitto_passwd /etc/mosquitto/passwd board-1
# adds a user to the password file kept in the mosquitto-auth volume.
set -eu
install -d -o mosquitto -g mosquitto -m 0750 /var/lib/mosquitto
if [ ! -f /etc/mosquitto/passwd ]; then
    echo "no users yet: docker compose run --rm mosquitto mosquitto_passwd /etc/mosquitto/passwd USER" >&2
    touch /etc/mosquitto/passwd
fi
chown root:mosquitto /etc/mosquitto/passwd
chmod 0640 /etc/mosquitto/passwd
exec "$@"
