#!/bin/bash
# The test "machine": runs inside `unshare -m --propagation private`, so every
# mount here is private to it. It gives the tests their own /etc (test users,
# polkit rules, registries.conf), polkit actions with hostd's policy, a system
# bus with D-Bus activation, and a real polkitd on that bus. It stays in the
# foreground until killed; the mount namespace dies with it.
set -euo pipefail
state=$1       # per-test directory: bus.conf, services/, etc copy
policy=$2      # hostd's polkit policy file
journal=${3:-} # optional: a directory holding the test's journal socket

if [[ -n $journal ]]; then
    # A copy of /run/systemd with the test's socket directory as journal/, so
    # hostd finds that socket and the host's /run stays untouched. polkitd
    # needs the rest of /run/systemd as it was (sd-login reads it).
    mkdir -p /run/systemd
    cp -a /run/systemd "$state/run-systemd"
    mkdir -p "$state/run-systemd/journal"
    mount --bind "$state/run-systemd" /run/systemd
    mount --bind "$journal" /run/systemd/journal
fi

cp -a /etc "$state/etc"
mount --bind "$state/etc" /etc
mkdir -p "$state/actions"
cp -a /usr/share/polkit-1/actions/. "$state/actions/"
cp "$policy" "$state/actions/"
mount --bind "$state/actions" /usr/share/polkit-1/actions

# Test users: an admin in wheel, a plain user, one that rules let only check.
groupadd -f wheel
useradd --no-create-home -u 4101 -G wheel hostd-admin
useradd --no-create-home -u 4102 hostd-user
useradd --no-create-home -u 4103 hostd-checker

# Activated services inherit this and so find the private bus.
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$state/bus.sock"
dbus-daemon --config-file="$state/bus.conf" --nofork --nopidfile &
bus=$!
for _ in $(seq 1 200); do [ -S "$state/bus.sock" ] && break; sleep 0.01; done
# The bus at its well-known path too, for what ignores DBUS_SYSTEM_BUS_ADDRESS:
# setuid programs such as polkit's agent helper, which checks a password.
mkdir -p "$state/run-dbus"
ln -s "$state/bus.sock" "$state/run-dbus/system_bus_socket"
mkdir -p /run/dbus
mount --bind "$state/run-dbus" /run/dbus
/usr/lib/polkit-1/polkitd --no-debug &
polkit=$!
trap 'kill $polkit $bus 2>/dev/null; wait' TERM INT
echo ready > "$state/ready"
wait
