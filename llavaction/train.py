"""Train, validate and test video LLMs on EPIC-KITCHENS-100 shards: the LightningCLI entry point.

    python -m llavaction.train fit --config experiments/demo.yaml      (the same as `python train.py ...`)

SIGTERM, or SIGUSR1 outside a SLURM job that requeues, ends a fit with a checkpoint (`--ckpt_path last` resumes it)
and exit status 128 + the signal's number (143, 138), as a shell reports a process stopped by a signal, so that
`fit && evaluate` does not go on with a half-trained model. A known error before or during the run (missing shards, a
bad config value, a bad sample in evaluation) is one line, `error: ...`, exit status 2; LLAVACTION_DEBUG=1 shows its
traceback.
"""

import signal
import sys


def main(args: list[str] | None = None) -> int:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from llavaction.cli import main as cli_main
    from llavaction.cli_errors import run_cli

    stopped_by: list[int] = []

    def stop_like_sigterm(signum, frame) -> None:
        """SIGUSR1 outside SLURM (where Lightning takes it for requeueing): stop as on SIGTERM, with a checkpoint."""
        stopped_by.append(signum)
        signal.raise_signal(signal.SIGTERM)

    def run() -> int:
        # set before the trainer starts, so that under SLURM with auto-requeue Lightning's own handler replaces it
        signal.signal(signal.SIGUSR1, stop_like_sigterm)
        try:
            cli_main(args)
        except SIGTERMException:
            signum = stopped_by[0] if stopped_by else signal.SIGTERM
            print(
                f"stopped by {signal.Signals(signum).name} after writing its checkpoint: not finished "
                "(resume with --ckpt_path last)",
                file=sys.stderr,
            )
            return 128 + signum
        return 0

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
