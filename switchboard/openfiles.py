"""The process's open-file limit: raised to its hard limit at start, so connections to the broker and the API
(one file descriptor each, one limit for both in ``switchboard up``) are not capped by a low default soft
limit such as 1024."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_open_file_limit() -> int:
    """Set the soft RLIMIT_NOFILE to the hard one (when the system allows); the soft limit in force after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    log.debug("open-file limit: %d", soft)
    return soft
