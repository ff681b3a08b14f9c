"""``first-boot.sh`` of a device bundle, kept here as text so it ships inside the wheel (package data takes
no ``.sh``). provisioning/bundle.py puts the device's values in after ``set -euo pipefail``.

Style: ``set -euo pipefail``, every expansion quoted, ``readonly`` constants, one function per step,
idempotent steps (install overwrites, venv and user only when missing, restart not start).
"""

SCRIPT = r"""#!/usr/bin/env bash
# hallfleet first boot: installs the agent of one device from its unpacked bundle and starts it.
# Run as root on 64-bit Raspberry Pi OS or Debian 12:  sudo ./first-boot.sh
# Idempotent: run it again with a newer bundle (rotated credentials) or to repair an installation.
# HALLFLEET_ROOT installs under another root (a mounted image); systemctl and apt still act on this host.
set -euo pipefail

# The values above are this device's (rendered by `hallfleet provision`); nothing below needs editing.
readonly ROOT="${HALLFLEET_ROOT:-}"
readonly PREFIX="${ROOT}/opt/hallfleet"
# Versions side by side (agent/updater.py): each a venv under versions/, the unit runs the one venv links to.
readonly VERSION="${REQUIREMENT#hallfleet==}"
readonly VENV="${PREFIX}/versions/${VERSION}"
readonly CURRENT="${PREFIX}/venv"
readonly ETC="${ROOT}/etc/hallfleet"
readonly CREDENTIALS="${ETC}/credentials"
readonly UNIT=hallfleet-agent.service
readonly UNIT_DIR="${ROOT}/etc/systemd/system"
readonly POLKIT_DIR="${ROOT}/etc/polkit-1/rules.d"
BUNDLE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly BUNDLE

die() {
    echo "first-boot: $*" >&2
    exit 1
}

check_host() {
    [[ ${EUID} -eq 0 ]] || die "run as root: sudo $0"
    local arch
    arch="$(uname -m)"
    case "${arch}" in
        aarch64 | x86_64) ;;
        *) die "${arch} is not supported: install 64-bit Raspberry Pi OS (32-bit has almost no wheels)" ;;
    esac
    command -v systemctl >/dev/null || die "systemd is required"
    command -v python3 >/dev/null || die "python3 is required (Debian 12 and Raspberry Pi OS bookworm ship 3.11)"
}

install_packages() {
    # python3-venv brings ensurepip; libusb is pyusb's backend (printers, fingerprint readers).
    local missing=() pkg
    for pkg in python3-venv libusb-1.0-0; do
        # shellcheck disable=SC2016 # dpkg's format string, not the shell's
        if ! dpkg-query --show --showformat='${db:Status-Status}' "${pkg}" 2>/dev/null | grep -qx installed; then
            missing+=("${pkg}")
        fi
    done
    if ((${#missing[@]} > 0)); then
        apt-get update
        apt-get install --yes --no-install-recommends "${missing[@]}"
    fi
}

ensure_user() {
    if ! id -u hallfleet >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/hallfleet --no-create-home \
            --shell /usr/sbin/nologin hallfleet
    fi
}

install_agent() {
    if [[ -z ${WHEEL} && -z ${INDEX_URL} ]]; then
        # A credentials-only bundle: the device already runs hallfleet (imaged, or installed by an earlier bundle).
        [[ -x "${CURRENT}/bin/hallfleet" ]] \
            || die "no hallfleet in ${CURRENT}: a credentials-only bundle (provision with --wheel or --index-url)"
        return 0
    fi
    [[ -x "${VENV}/bin/python" ]] || python3 -m venv "${VENV}"
    local pip=("${VENV}/bin/python" -m pip install --disable-pip-version-check --quiet)
    local target="${REQUIREMENT}"
    [[ -z ${INDEX_URL} ]] || pip+=(--index-url "${INDEX_URL}")
    if [[ -n ${WHEEL} ]]; then
        # The bundle's own wheel, never a same-named package from an index (dependency confusion).
        target="${BUNDLE}/wheels/${WHEEL}"
        pip+=(--find-links "${BUNDLE}/wheels")
    fi
    [[ -z ${EXTRAS} ]] || target="${target}[${EXTRAS}]"
    "${pip[@]}" "${target}"
    if [[ ${ROLE} == attendance ]]; then
        # --no-deps: its metadata wants dlib built from source; dlib-bin (the face extra) is that module.
        "${pip[@]}" --no-deps 'face-recognition==1.3.0'
    fi
    touch "${VENV}/.hallfleet-complete"
    link_current
}

link_current() {
    # An install from before versions side by side had its venv there: the link replaces it.
    if [[ -d ${CURRENT} && ! -L ${CURRENT} ]]; then
        rm -rf -- "${CURRENT}"
    fi
    ln -sfn "versions/${VERSION}" "${PREFIX}/.venv.new"
    mv -T "${PREFIX}/.venv.new" "${CURRENT}"
}

install_credentials() {
    install -d -m 0700 -o root -g root "${CREDENTIALS}"
    local f
    # A credential this bundle no longer carries (a password after a switch to certificates) must not linger.
    for f in "${CREDENTIALS}"/*; do
        [[ -e ${f} ]] || continue
        [[ -e "${BUNDLE}/credentials/$(basename -- "${f}")" ]] || rm -f -- "${f}"
    done
    for f in "${BUNDLE}"/credentials/*; do
        install -m 0600 -o root -g root "${f}" "${CREDENTIALS}/$(basename -- "${f}")"
    done
}

install_files() {
    install -d -m 0755 -o root -g root "${ETC}" "${UNIT_DIR}"
    install_credentials
    install -m 0644 -o root -g root "${BUNDLE}/agent.toml" "${ETC}/agent.toml"
    install -m 0644 -o root -g root "${BUNDLE}/${UNIT}" "${UNIT_DIR}/${UNIT}"
    # The updater's unit: started by the agent's update command (through polkit), never enabled.
    install -m 0644 -o root -g root "${BUNDLE}/${UPDATE_UNIT}" "${UNIT_DIR}/${UPDATE_UNIT}"
    if [[ -n ${POLKIT_RULES} ]]; then
        install -d -m 0755 -o root -g root "${POLKIT_DIR}"
        install -m 0644 -o root -g root "${BUNDLE}/${POLKIT_RULES}" "${POLKIT_DIR}/${POLKIT_RULES}"
    fi
}

start_agent() {
    systemctl daemon-reload
    systemctl enable "${UNIT}"
    # restart, not start: a second run must hand the running agent its new credentials.
    systemctl restart "${UNIT}"
    systemctl is-active --quiet "${UNIT}" || die "${UNIT} did not start: journalctl -u ${UNIT}"
}

main() {
    check_host
    install_packages
    ensure_user
    install_agent
    install_files
    start_agent
    echo "first-boot: ${SITE}/${DEVICE} (${ROLE}) is installed and running."
    echo "first-boot: delete this bundle from the device now: it holds the device's secret."
}

main "$@"
"""
