#!/bin/sh
# Installs what the integration tests run against: Dovecot (IMAP, LMTP), Postfix, mbsync.
#
# For a fresh Debian 12, as root or through sudo. Idempotent: when every package is
# already installed it changes nothing (and does not run apt-get update).
#
# The tests start their own private Dovecot/Postfix instances on free loopback ports,
# so the system daemons must not run: this script keeps the packages' maintainer
# scripts from starting them (a temporary policy-rc.d), stops any daemon that came up
# anyway because of this install, and disables their boot-time start.
#
# Usage: scripts/install-deps.sh [--force]   (--force: run the install step even when
#                                             everything is present)
set -eu

PACKAGES="dovecot-core dovecot-imapd dovecot-lmtpd postfix isync openssl ca-certificates"
SERVICES="dovecot postfix"

log() { printf 'install-deps: %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    log "must run as root (or with sudo available)" >&2
    exit 1
fi

FORCE=no
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=yes ;;
        *) log "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

# Packages not (fully) installed.
missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ] && [ "$FORCE" = no ]; then
    log "all present ($PACKAGES); nothing to do"
    exit 0
fi

# Whether a service's daemon runs right now (query only; never used to kill).
is_running() {
    case "$1" in
        dovecot) pidfile=/run/dovecot/master.pid ;;
        postfix) pidfile=/var/spool/postfix/pid/master.pid ;;
        *) return 1 ;;
    esac
    [ -r "$pidfile" ] || return 1
    pid=$(tr -d ' \n' <"$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

running_before=""
for svc in $SERVICES; do
    if is_running "$svc"; then
        running_before="$running_before $svc"
    fi
done

# Keep invoke-rc.d / deb-systemd-invoke from starting the daemons during the install.
# An existing policy-rc.d (e.g. Docker's "exit 101") is left alone.
POLICY=/usr/sbin/policy-rc.d
policy_added=no
cleanup() {
    if [ "$policy_added" = yes ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from coi-proxy scripts/install-deps.sh\nexit 101\n' |
        $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 0755 "$POLICY"
    policy_added=yes
fi

# Postfix asks how to configure itself; the tests bring their own configuration.
echo "postfix postfix/main_mailer_type select No configuration" |
    $SUDO debconf-set-selections

log "installing:${missing:- (forced, nothing missing)}"
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $PACKAGES

cleanup
policy_added=no

# Stop whatever this install started (by its init script or systemctl, never by
# process name). Services whose package this run installed are also kept from starting
# at boot. Daemons that ran before, and packages that were already there, are left alone.
stopped=""
disabled=""
for svc in $SERVICES; do
    case " $running_before " in
        *" $svc "*) continue ;;
    esac
    case "$svc" in
        dovecot) package=dovecot-core ;;
        *) package=$svc ;;
    esac
    newly_installed=no
    case " $missing " in
        *" $package "*) newly_installed=yes ;;
    esac
    if [ -d /run/systemd/system ]; then
        if $SUDO systemctl is-active --quiet "$svc" 2>/dev/null; then
            $SUDO systemctl stop "$svc" && stopped="$stopped $svc"
        fi
        if [ "$newly_installed" = yes ]; then
            $SUDO systemctl disable --quiet "$svc" 2>/dev/null && disabled="$disabled $svc"
        fi
    else
        if is_running "$svc" && [ -x "/etc/init.d/$svc" ]; then
            $SUDO "/etc/init.d/$svc" stop >/dev/null && stopped="$stopped $svc"
        fi
        if [ "$newly_installed" = yes ] && command -v update-rc.d >/dev/null 2>&1 &&
            [ -x "/etc/init.d/$svc" ]; then
            $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 && disabled="$disabled $svc"
        fi
    fi
done

log "installed:${missing:- nothing (forced run)}; stopped:${stopped:- none}; disabled at boot:${disabled:- none}"
