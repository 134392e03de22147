"""`llavaction predict`: answers about clips of video files from a checkpoint (llavaction.evaluation.clips).

    llavaction predict --checkpoint MLAdaptiveIntelligence/LLaVAction-7B --video P01_11.MP4 \
        --start 00:00:01.56 --end 2.45 --options "open drawer" "close drawer" "take knife" "put knife" "wash cup"
    llavaction predict --checkpoint runs/demo/checkpoints/last.ckpt --clips clips.jsonl --json
    llavaction predict --checkpoint DIR --video V.mp4 --start 3 --end 6 --strip seen.png
"""

from __future__ import annotations

from llavaction.evaluation.clips import ClipQuestions, answer_clips
from llavaction.utils.options import main_of

main = main_of(ClipQuestions, answer_clips, "llavaction predict", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
