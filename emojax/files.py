"""Whole-file writes: a temporary name, then a rename, so a kill or a concurrent reader never sees half a file."""
from __future__ import annotations

import json
import os
from typing import Any


def write_text(path: str, text: str) -> None:
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=1))
