#!/usr/bin/python3
"""Drive a command on a pseudo-terminal the way a person would: each
`--expect TEXT --send KEYS` pair waits until the output (since the previous
keypress) shows TEXT, then types KEYS (Python escapes allowed, e.g. '\\x03'
for Ctrl-C, '\\r' for Enter). Everything the command printed goes to
stdout; the exit status is the command's, or 124 when an expected text
never came within the timeout. After a prompt that asks for a password,
the keys are typed only once the terminal stops echoing, as a person
types them: a password agent that turns echo off with TCSAFLUSH discards
what arrived before.

usage: pty-session.py [--expect TEXT --send KEYS]... -- COMMAND...
"""
import os
import pty
import select
import sys
import termios
import time

TIMEOUT = int(os.environ.get("PTY_SESSION_TIMEOUT", "120"))


def parse(argv):
    split = argv.index("--")
    steps, opts = [], argv[:split]
    for i in range(0, len(opts), 4):
        assert opts[i] == "--expect" and opts[i + 2] == "--send", __doc__
        keys = opts[i + 3].encode().decode("unicode_escape").encode()
        steps.append((opts[i + 1].encode(), keys))
    return steps, argv[split + 1:]


def wait_for_echo_off(fd, limit=5.0):
    """Until the terminal (whose settings the master reads) echoes no more."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if not termios.tcgetattr(fd)[3] & termios.ECHO:
            return
        time.sleep(0.02)


def main():
    steps, command = parse(sys.argv[1:])
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.execvp(command[0], command)
    seen = b""
    deadline = time.monotonic() + TIMEOUT
    while True:
        if steps and steps[0][0] in seen:
            if b"assword" in steps[0][0]:
                wait_for_echo_off(fd)
            os.write(fd, steps.pop(0)[1])
            seen = b""
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            sys.exit(124)
    _, status = os.waitpid(pid, 0)
    if steps:
        sys.exit(124)
    sys.exit(os.waitstatus_to_exitcode(status))


main()
