"""Pass a span pipe to a child that starts as a new interpreter.

RQ 3.x's ``SpawnWorker`` starts each work horse with ``os.posix_spawn``,
so the horse shares no memory with its worker. The worker opens a span
pipe as it does before a fork, lets the horse inherit the child's two ends
and names them in :data:`PIPE_VARIABLE`. The horse's jobtrace reads the
variable when it is imported and uses the pipe once it builds its span
processor, as a forked child does.

The value is ``<parent pid>:<span fd>:<confirmation fd>``. A process
accepts it only from its parent, and only when both descriptors are open
pipe ends of the right direction, so a value copied into another
process's environment is ignored.
"""

from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger(__name__)

#: The environment variable that names a span pipe for a spawned child.
PIPE_VARIABLE = "JOBTRACE_SPAN_PIPE"

# The descriptors that this process took from PIPE_VARIABLE, and the pid
# that took them: a process forked from this one must not use them.
_inherited: tuple[int, int] | None = None
_inherited_pid = 0


def value_for(write_fd: int, ack_fd: int) -> str:
    """Return the value of :data:`PIPE_VARIABLE` for a child of this process."""
    return f"{os.getpid()}:{write_fd}:{ack_fd}"


def parse(value: str) -> tuple[int, int] | None:
    """Return the span and confirmation fds that ``value`` names, if valid.

    Returns None, after one log line, when the value is malformed, was set
    by a process other than this one's parent, or names descriptors that
    are not a pipe's write end and read end.
    """
    try:
        parent, write_fd, ack_fd = (int(part) for part in value.split(":"))
    except ValueError:
        log.warning("Ignored %s=%r: expected pid:fd:fd", PIPE_VARIABLE, value)
        return None
    if parent != os.getppid():
        log.debug(
            "Ignored %s: set by process %d, but the parent is %d",
            PIPE_VARIABLE,
            parent,
            os.getppid(),
        )
        return None
    if not (_is_pipe_end(write_fd, os.O_WRONLY) and _is_pipe_end(ack_fd, os.O_RDONLY)):
        log.warning(
            "Ignored %s=%r: the descriptors are not the ends of a pipe",
            PIPE_VARIABLE,
            value,
        )
        return None
    return write_fd, ack_fd


def _is_pipe_end(fd: int, access: int) -> bool:
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        flags = _status_flags(fd)
    except OSError:
        return False
    return flags is None or flags & os.O_ACCMODE == access


def _status_flags(fd: int) -> int | None:
    try:
        import fcntl
    except ImportError:  # Windows, which has no posix_spawn either
        return None
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def take_from_environment() -> None:
    """Remove :data:`PIPE_VARIABLE` from the environment and keep its pipe.

    The processes that this one starts must not inherit the variable or
    the descriptors, so both are gone afterwards, whatever the value.
    """
    global _inherited, _inherited_pid
    value = os.environ.pop(PIPE_VARIABLE, None)
    if value is None:
        return
    fds = parse(value)
    if fds is None:
        return
    for fd in fds:
        os.set_inheritable(fd, False)
    _inherited, _inherited_pid = fds, os.getpid()


def take_inherited() -> tuple[int, int] | None:
    """Return the pipe taken from the environment once, in the process that took it."""
    global _inherited
    fds, _inherited = _inherited, None
    if fds is None or _inherited_pid != os.getpid():
        return None
    return fds
