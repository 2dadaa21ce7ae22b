"""Command-line entry points. They share one convention for exit statuses: 0 done; 2 the input,
config or workdir cannot be used, reported before any work ("Error: ..." on stderr, no traceback);
1 the work itself failed (a sweep point, an uncaught exception)."""
import sys
from typing import NoReturn


def fail(error: Exception | str) -> NoReturn:
  """Stops a command on unusable input: the message on stderr, exit status 2."""
  print(f'Error: {error}', file=sys.stderr)
  sys.exit(2)
