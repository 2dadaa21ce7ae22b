"""Run configs (`get_config(arg)` per file) and the lookup of `--config=configs/x.py` in this folder."""
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def resolve_config_path(argv: list[str]) -> list[str]:
  """Maps --config=configs/x.py[:arg] to experiments/configs/x.py when the former does not exist."""
  resolved = []
  for item in argv:
    if item.startswith('--config=') and not item.startswith('--config.'):
      path, _, arg = item[len('--config='):].partition(':')
      local = os.path.join(_HERE, os.path.relpath(path, 'configs')) if path.startswith('configs') else path
      if not os.path.exists(path) and os.path.exists(local):
        item = '--config=' + local + (':' + arg if arg else '')
    resolved.append(item)
  return resolved
