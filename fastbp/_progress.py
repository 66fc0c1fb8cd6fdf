"""Progress reporting for fit, by verbosity (Keras levels).

0: nothing. 1: a progress bar over the minibatches of the whole fit (tqdm when it
is installed; otherwise a plain one-line bar on a terminal, and a line per epoch
elsewhere, so that logs stay readable). 2: one line per epoch.
"""

import sys
import time


def make(verbose, epochs, n_batches, first_epoch):
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
            if sys.stdout.isatty():
                return PlainBar(epochs, n_batches, first_epoch)
            return EpochLines(epochs, first_epoch)
        return TqdmBar(tqdm.tqdm, epochs, n_batches, first_epoch)
    return EpochLines(epochs, first_epoch)


def _shown(metrics):
    return " - ".join(f"{key}: {value:.4f}" for key, value in metrics.items())


class Silent:
    def batches(self, count):
        pass

    def epoch_end(self, epoch, metrics, seconds):
        pass

    def close(self):
        pass


class EpochLines(Silent):
    def __init__(self, epochs, first_epoch):
        self.last = first_epoch + epochs

    def epoch_end(self, epoch, metrics, seconds):
        print(f"epoch {epoch + 1}/{self.last}: {_shown(metrics)} - {seconds:.3f}s", flush=True)


class PlainBar(Silent):
    """One terminal line redrawn in place, at most ten times a second."""

    width = 30

    def __init__(self, epochs, n_batches, first_epoch):
        self.total = max(1, epochs * n_batches)
        self.done = 0
        self.epoch = first_epoch
        self.last = first_epoch + epochs
        self.metrics = ""
        self.drawn = 0.0

    def batches(self, count):
        self.done += count
        now = time.monotonic()
        if now - self.drawn > 0.1 or self.done == self.total:
            self.drawn = now
            filled = int(self.width * self.done / self.total)
            bar = "=" * filled + "." * (self.width - filled)
            sys.stdout.write(
                f"\repoch {self.epoch + 1}/{self.last} [{bar}]"
                f" {100 * self.done / self.total:3.0f}% {self.metrics}"
            )
            sys.stdout.flush()

    def epoch_end(self, epoch, metrics, seconds):
        self.epoch = epoch + 1
        self.metrics = _shown(metrics)
        self.batches(0)

    def close(self):
        sys.stdout.write("\n")
        sys.stdout.flush()


class TqdmBar(Silent):
    def __init__(self, tqdm, epochs, n_batches, first_epoch):
        self.bar = tqdm(total=epochs * n_batches, unit="batch", leave=True)
        self.last = first_epoch + epochs
        self.bar.set_description(f"epoch {first_epoch + 1}/{self.last}")

    def batches(self, count):
        self.bar.update(count)

    def epoch_end(self, epoch, metrics, seconds):
        self.bar.set_description(f"epoch {min(epoch + 2, self.last)}/{self.last}")
        self.bar.set_postfix({key: f"{value:.4f}" for key, value in metrics.items()})

    def close(self):
        self.bar.close()
