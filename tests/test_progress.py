"""Progress bars in a log: drawn when they open and close, not on every update (a captured run's output held
every redraw before: about 1,700 for one RAVDESS run)."""
import io
import time

from emojax import progress


def test_a_bar_writing_to_a_log_draws_only_when_it_opens_and_closes():
  log = io.StringIO()  # not a terminal, like a cluster job's output file (pytest captures stderr too)
  bar = progress.bar(range(200), total=200, desc='epoch 1/40', unit='batch', file=log)
  for step in bar:  # 0.6 s: tqdm's own interval (0.1 s) would draw it about six times
    time.sleep(0.003)
    bar.set_postfix(loss=f'{1 / (step + 1):.3f}', refresh=False)  # as the training loop does
  bar.close()
  draws = log.getvalue().count('\r')
  assert 1 <= draws <= 3 and '200/200' in log.getvalue()
