#!/usr/bin/env bash
# Install the Cairn edge agent on a Raspberry Pi (64-bit Raspberry Pi OS, Debian 12 based).
#
#   sudo deploy/pi/install.sh [--dry-run] [--with-mosquitto] SOURCE
#
# SOURCE is a Cairn checkout (the directory holding pyproject.toml) or a wheel
# (cairn-*.whl, from `pip wheel --no-deps .`): Cairn is not on PyPI. What it does, each step
# skipped when already done, so running it again (e.g. to upgrade from a newer SOURCE) is safe:
#   1. apt-get install python3-venv (Python 3.11 or newer is needed)
#   2. the system user cairn-edge, home /var/lib/cairn-edge (mode 0700)
#   3. a venv in /opt/cairn and `pip install SOURCE[edge]` into it
#   4. `cairn-edge init /var/lib/cairn-edge` as cairn-edge (not when edge.toml exists)
#   5. deploy/systemd/cairn-edge.service into /etc/systemd/system, enabled (started by you, once
#      edge.toml is edited; restarted here when it was already running)
#   6. with --with-mosquitto: the mosquitto package with deploy/mosquitto/mosquitto.conf and acl,
#      a password file with a user cairn-edge (random password, also written to edge.toml)
# It ends with advice for the SD card. --dry-run prints the commands instead of running them
# (it needs no root and changes nothing). docs/deploy.md has the whole procedure.
set -euo pipefail

PREFIX=/opt/cairn
USER_NAME=cairn-edge
DATA_DIR=/var/lib/cairn-edge
UNIT_DIR=/etc/systemd/system
MOSQ_DIR=/etc/mosquitto
MOSQ_USER=cairn-edge # the edge agent's broker user, as in deploy/mosquitto/acl
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEPLOY=$(dirname "$HERE")

ARGS=("$@")
DRY_RUN=0
WITH_MOSQUITTO=0
SOURCE=""

usage() {
	sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

die() {
	echo "install.sh: error: $*" >&2
	exit 1
}

say() {
	echo "==> $*"
}

# Run a command that changes the system, or print it under --dry-run.
run() {
	if ((DRY_RUN)); then
		printf 'would run:'
		printf ' %q' "$@"
		printf '\n'
	else
		"$@"
	fi
}

while (($#)); do
	case "$1" in
	--dry-run) DRY_RUN=1 ;;
	--with-mosquitto) WITH_MOSQUITTO=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	-*)
		usage >&2
		die "unknown option $1"
		;;
	*)
		[[ -z "$SOURCE" ]] || die "one SOURCE only (got $SOURCE and $1)"
		SOURCE=$1
		;;
	esac
	shift
done

[[ -n "$SOURCE" ]] || {
	usage >&2
	die "give SOURCE: a Cairn checkout or a cairn-*.whl (Cairn is not on PyPI)"
}

if ((!DRY_RUN)) && [[ $EUID -ne 0 ]]; then
	die "must run as root: sudo $0 ${ARGS[*]} (or --dry-run to see what it would do)"
fi

# -- checks (read only) ----------------------------------------------------------------------

if [[ -d "$SOURCE" ]]; then
	SOURCE=$(cd "$SOURCE" && pwd)
	[[ -f "$SOURCE/pyproject.toml" ]] || die "$SOURCE has no pyproject.toml: not a Cairn checkout"
elif [[ -f "$SOURCE" && "$SOURCE" == *.whl ]]; then
	SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
else
	die "$SOURCE is neither a Cairn checkout nor a .whl file"
fi
UNIT_SRC="$DEPLOY/systemd/cairn-edge.service"
[[ -f "$UNIT_SRC" ]] || die "$UNIT_SRC is missing: run this script from a Cairn checkout"
if ((WITH_MOSQUITTO)); then
	for f in "$DEPLOY/mosquitto/mosquitto.conf" "$DEPLOY/mosquitto/acl"; do
		[[ -f "$f" ]] || die "$f is missing"
	done
fi

arch=$(uname -m)
if [[ "$arch" != aarch64 ]]; then
	echo "install.sh: warning: this is $arch, not aarch64 (64-bit Raspberry Pi OS); going on" >&2
fi

if ((DRY_RUN)); then
	say "dry run: nothing is changed"
fi

# -- 1. Python -------------------------------------------------------------------------------

command -v python3 >/dev/null || die "python3 is missing: apt-get install python3"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
	die "Cairn needs Python 3.11 or newer; python3 is $(python3 -V 2>&1) (use Raspberry Pi OS 12 'bookworm' or newer)"
if python3 -c 'import ensurepip, venv' 2>/dev/null; then
	say "python3 $(python3 -c 'import platform; print(platform.python_version())') with venv: present"
else
	say "installing python3-venv"
	run apt-get update
	run apt-get install -y python3-venv
fi

# -- 2. the service user ---------------------------------------------------------------------

if id -u "$USER_NAME" >/dev/null 2>&1; then
	say "user $USER_NAME: present"
else
	say "creating the system user $USER_NAME"
	run useradd --system --home-dir "$DATA_DIR" --create-home --shell /usr/sbin/nologin "$USER_NAME"
fi
run chmod 0700 "$DATA_DIR"

# -- 3. the venv and Cairn -------------------------------------------------------------------

if [[ -x "$PREFIX/bin/python" ]]; then
	say "venv $PREFIX: present"
else
	say "creating the venv $PREFIX"
	run python3 -m venv "$PREFIX"
fi
say "installing Cairn with the edge extra from $SOURCE"
run "$PREFIX/bin/pip" install --upgrade --no-cache-dir "${SOURCE}[edge]"
if [[ -f "$SOURCE/docs/edge.md" ]]; then
	# the unit's Documentation= points here
	run install -d -m 0755 "$PREFIX/share/doc/cairn"
	for doc in edge.md deploy.md security.md; do
		if [[ -f "$SOURCE/docs/$doc" ]]; then
			run install -m 0644 "$SOURCE/docs/$doc" "$PREFIX/share/doc/cairn/"
		fi
	done
fi

# -- 4. the agent's directory: edge.toml and device.seed -------------------------------------

if [[ -f "$DATA_DIR/edge.toml" ]]; then
	say "$DATA_DIR/edge.toml: present (kept as it is)"
elif [[ -f "$DATA_DIR/device.seed" ]]; then
	die "$DATA_DIR/device.seed exists without edge.toml: restore edge.toml (never replace a seed: a new seed is a new device)"
else
	say "cairn-edge init $DATA_DIR"
	run runuser -u "$USER_NAME" -- "$PREFIX/bin/cairn-edge" init "$DATA_DIR"
fi

# -- 5. the systemd unit ---------------------------------------------------------------------

if [[ -f "$UNIT_DIR/cairn-edge.service" ]] && cmp -s "$UNIT_SRC" "$UNIT_DIR/cairn-edge.service"; then
	say "$UNIT_DIR/cairn-edge.service: up to date"
else
	say "installing $UNIT_DIR/cairn-edge.service"
	run install -m 0644 "$UNIT_SRC" "$UNIT_DIR/cairn-edge.service"
	run systemctl daemon-reload
fi
run systemctl enable cairn-edge.service
# an upgrade: restart the agent if it runs (it commits and acknowledges before stopping)
run systemctl try-restart cairn-edge.service

# -- 6. Mosquitto (optional) -----------------------------------------------------------------

if ((WITH_MOSQUITTO)); then
	if command -v mosquitto_passwd >/dev/null && [[ -x /usr/sbin/mosquitto ]]; then
		say "mosquitto: present"
	else
		say "installing mosquitto"
		run apt-get update
		run apt-get install -y mosquitto
	fi
	for f in mosquitto.conf acl; do
		if [[ -f "$MOSQ_DIR/$f" ]] && cmp -s "$DEPLOY/mosquitto/$f" "$MOSQ_DIR/$f"; then
			say "$MOSQ_DIR/$f: up to date"
		else
			if [[ -f "$MOSQ_DIR/$f" && ! -f "$MOSQ_DIR/$f.before-cairn" ]]; then
				run cp -p "$MOSQ_DIR/$f" "$MOSQ_DIR/$f.before-cairn"
			fi
			say "installing $MOSQ_DIR/$f"
			run install -m 0644 "$DEPLOY/mosquitto/$f" "$MOSQ_DIR/$f"
		fi
	done
	# the broker's persistence directory belongs to its user
	run install -d -o mosquitto -g mosquitto -m 0750 /var/lib/mosquitto
	if [[ -f "$MOSQ_DIR/passwd" ]] && grep -q "^$MOSQ_USER:" "$MOSQ_DIR/passwd"; then
		say "$MOSQ_DIR/passwd has the user $MOSQ_USER: kept"
	else
		say "adding the broker user $MOSQ_USER (random password, written to $DATA_DIR/edge.toml)"
		password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
		if [[ ! -f "$MOSQ_DIR/passwd" ]]; then
			run install -m 0640 -o root -g mosquitto /dev/null "$MOSQ_DIR/passwd"
		fi
		if ((DRY_RUN)); then
			echo "would run: mosquitto_passwd -b $MOSQ_DIR/passwd $MOSQ_USER <random password>"
			echo "would set username and password in [mqtt] of $DATA_DIR/edge.toml"
		else
			mosquitto_passwd -b "$MOSQ_DIR/passwd" "$MOSQ_USER" "$password"
			# the template's commented examples become the real keys
			if grep -q '^# username = ' "$DATA_DIR/edge.toml" && grep -q '^# password = ' "$DATA_DIR/edge.toml"; then
				sed -i -e "s|^# username = .*|username = \"$MOSQ_USER\"|" \
					-e "s|^# password = .*|password = \"$password\"|" "$DATA_DIR/edge.toml"
				chmod 0600 "$DATA_DIR/edge.toml"
			else
				echo "install.sh: warning: set [mqtt] username = \"$MOSQ_USER\" and its password in $DATA_DIR/edge.toml yourself; the password is: $password" >&2
			fi
		fi
		unset password
	fi
	run chown root:mosquitto "$MOSQ_DIR/passwd"
	run chmod 0640 "$MOSQ_DIR/passwd"
	run systemctl enable mosquitto.service
	run systemctl restart mosquitto.service
	echo
	echo "Add a user for each board (named as the board, e.g. board-1), then reload the broker:"
	echo "  mosquitto_passwd $MOSQ_DIR/passwd board-1 && systemctl reload mosquitto"
fi

# -- done ------------------------------------------------------------------------------------

cat <<EOF

Next:
  1. edit $DATA_DIR/edge.toml: [mqtt] broker (and username/password), [replication].gateways
     (your gateways' keys), [replication].advertise, [dht].bootstrap
  2. systemctl start cairn-edge && journalctl -u cairn-edge -f
  3. runuser -u $USER_NAME -- $PREFIX/bin/cairn-edge keys --config $DATA_DIR/edge.toml
     prints the Noise key your gateways need; back up $DATA_DIR/device.seed (a new seed is a
     new device)

The SD card (writes wear it out; the agent itself writes its logs to $DATA_DIR):
  - mount the root file system with noatime (add it to the options of / in /etc/fstab)
  - keep the journal in RAM: Storage=volatile in /etc/systemd/journald.conf (logs are lost at
    reboot), or cap it on disk with SystemMaxUse=50M; then systemctl restart systemd-journald
  - or install log2ram (https://github.com/azlux/log2ram), which keeps /var/log in RAM and
    writes it back once a day
  - [logs] max_disk_mb in edge.toml caps the agent's logs; [logs] sync = "full" survives power
    loss at the cost of more writes
  - a good power supply: a brown-out during a write can corrupt the card
EOF
