# Shared by /etc/rescue/setup and /etc/profile (sourced, busybox sh).

# The consoles the kernel was given (a screen and a serial line, for IPMI serial-over-LAN).
CONSOLES=$(cat /sys/class/tty/console/active 2>/dev/null)

# Every line reaches every console, not just the last one that /dev/console is.
say() {
    if [ -z "$CONSOLES" ]; then
        echo "$@" > /dev/console
        return
    fi
    for t in $CONSOLES; do echo "$@" > "/dev/$t" 2>/dev/null; done
}

# One clear line per problem; the rescue system goes on without the option.
warn() {
    say "restore-rescue: warning: $*"
}

# A terminal fit for long lines: autowrap on (firmware and boot loaders leave it off, and
# every line past the last column is then cut), and a size. The kernel knows a screen's size;
# a serial line's is unknown (0 0), and programs then assume anything: 80x25 unless `resize`
# asks the terminal.
term_setup() {
    printf '\033[?7h' > "$1" 2>/dev/null || return 0
    set -- "$1" $(stty -F "$1" size 2>/dev/null)
    if [ "${2:-0}" = 0 ] || [ "${3:-0}" = 0 ]; then
        stty -F "$1" rows 25 cols 80 2>/dev/null
    fi
    return 0
}
