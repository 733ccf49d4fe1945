#!/usr/bin/python3
"""Run a command on a pseudo-terminal the way a person would: wait until its
output shows WAIT_FOR, press Ctrl-C, and when it asks PROMPT, answer ANSWER.
Everything the command printed goes to stdout; the exit status is the
command's (or 124 when an expected text never came).

usage: pty-interrupt.py WAIT_FOR PROMPT ANSWER -- COMMAND...
"""
import os
import pty
import select
import sys
import time

TIMEOUT = 120


def main():
    wait_for, prompt, answer = (s.encode() for s in sys.argv[1:4])
    command = sys.argv[sys.argv.index("--") + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        os.execvp(command[0], command)
    seen = b""
    steps = [(wait_for, b"\x03"), (prompt, answer + b"\r")]
    deadline = time.monotonic() + TIMEOUT
    while True:
        if steps and steps[0][0] in seen:
            os.write(fd, steps.pop(0)[1])
            seen = b""  # the next text must come after this keypress
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
