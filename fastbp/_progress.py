"""Progress reporting for fit, by verbosity (Keras levels).

0: nothing. 1: one progress bar over the minibatches of the whole fit, showing the
epoch, the minibatch rate and the latest metrics (tqdm when it is installed,
otherwise a plain bar of one line), when the output is a terminal; elsewhere (a
log file, CI) one line per epoch, so that logs hold no carriage-return redraws.
2: one line per epoch.

Epochs are numbered from 1 to the fit's own ``epochs`` in every fit call (the
History keeps the running count across calls). ``epoch_lines=True`` (the command
line) adds the epoch's line above a bar.
"""

import sys
import time


def make(verbose, epochs, n_batches, first_epoch, epoch_lines=False):
    """The display of a fit of ``epochs`` epochs of ``n_batches`` minibatches whose
    first epoch is the model's ``first_epoch`` (counted across fits)."""
    if isinstance(verbose, bool):
        verbose = int(verbose)
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if verbose == 0:
        return Silent()
    if verbose == 1:
        try:
            import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None and _terminal(sys.stderr):  # where tqdm draws
            return TqdmBar(tqdm.tqdm, epochs, n_batches, first_epoch, epoch_lines)
        if tqdm is None and _terminal(sys.stdout):
            return PlainBar(epochs, n_batches, first_epoch, epoch_lines)
    return EpochLines(epochs, first_epoch)


def _terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def shown(metrics):
    """Metrics as the progress shows them: ``loss: 0.1234 - accuracy: 0.9500``."""
    return " - ".join(f"{key}: {value:.4f}" for key, value in metrics.items())


class Silent:
    def batches(self, count):
        pass

    def epoch_end(self, epoch, metrics, seconds):
        pass

    def close(self):
        pass


class _Numbered(Silent):
    """Numbers the fit's epochs from 1 to its own ``epochs``."""

    def __init__(self, epochs, first_epoch):
        self.epochs, self.first = epochs, first_epoch

    def number(self, epoch):
        """The 1-based number within this fit of the model's ``epoch``."""
        return min(epoch - self.first + 1, self.epochs)

    def line(self, epoch, metrics, seconds):
        return f"epoch {self.number(epoch)}/{self.epochs}: {shown(metrics)} - {seconds:.3f}s"


class EpochLines(_Numbered):
    def epoch_end(self, epoch, metrics, seconds):
        print(self.line(epoch, metrics, seconds), flush=True)


class PlainBar(_Numbered):
    """One terminal line redrawn in place, at most ten times a second; each redraw
    pads to the width of the one before, so no leftovers of a longer line show."""

    width = 30

    def __init__(self, epochs, n_batches, first_epoch, epoch_lines=False):
        super().__init__(epochs, first_epoch)
        self.n_batches = max(1, n_batches)
        self.total = max(1, epochs * n_batches)
        self.done = 0
        self.current = 1  # the epoch in progress (or the last one, at the end)
        self.metrics = ""
        self.drawn = 0.0
        self.started = time.monotonic()
        self.shown_width = 0
        self.epoch_lines = epoch_lines

    def batches(self, count):
        self.done += count
        now = time.monotonic()
        if now - self.drawn > 0.1 or self.done >= self.total:
            self.drawn = now
            self._draw(now)

    def _draw(self, now):
        filled = min(self.width, int(self.width * self.done / self.total))
        bar = "=" * filled + "." * (self.width - filled)
        rate = self.done / max(now - self.started, 1e-9)
        text = (
            f"epoch {self.current}/{self.epochs} [{bar}] {self.done}/{self.total}"
            f" {rate:,.0f} batch/s" + (f" - {self.metrics}" if self.metrics else "")
        )
        sys.stdout.write("\r" + text.ljust(self.shown_width))
        sys.stdout.flush()
        self.shown_width = len(text)

    def epoch_end(self, epoch, metrics, seconds):
        number = self.number(epoch)
        self.current = min(number + 1, self.epochs)
        self.metrics = shown(metrics)
        if self.epoch_lines:
            sys.stdout.write("\r" + self.line(epoch, metrics, seconds).ljust(self.shown_width))
            sys.stdout.write("\n")
            self.shown_width = 0
        self._draw(time.monotonic())

    def close(self):
        sys.stdout.write("\n")
        sys.stdout.flush()


class TqdmBar(_Numbered):
    def __init__(self, tqdm, epochs, n_batches, first_epoch, epoch_lines=False):
        super().__init__(epochs, first_epoch)
        self.bar = tqdm(total=epochs * n_batches, unit="batch", leave=True, dynamic_ncols=True)
        self.bar.set_description(f"epoch 1/{epochs}")
        self.epoch_lines = epoch_lines

    def batches(self, count):
        self.bar.update(count)

    def epoch_end(self, epoch, metrics, seconds):
        if self.epoch_lines:
            self.bar.write(self.line(epoch, metrics, seconds))
        number = self.number(epoch)
        self.bar.set_description(f"epoch {min(number + 1, self.epochs)}/{self.epochs}")
        self.bar.set_postfix({key: f"{value:.4f}" for key, value in metrics.items()})

    def close(self):
        self.bar.close()
