"""`llavaction export`: a trained checkpoint (a Lightning `.ckpt`, an original folder or a hub id) written as a model
folder other tools load: the original layout, or transformers' own class (`--layout transformers`).

    llavaction export --checkpoint runs/qwen/checkpoints/last.ckpt --layout transformers --out export/qwen
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llavaction.evaluation.checkpoint_format import ExportLayout
from llavaction.utils.options import main_of


@dataclass(frozen=True)
class ExportOptions:
    """Write a checkpoint's model and tokenizer in another layout.

    Args:
        checkpoint: a Lightning checkpoint file, an original checkpoint folder or a model-hub id.
        out: the folder to write: new, empty or an earlier export (replaced as a whole, only once the new export is
            complete); any other folder is refused.
        layout: 'original': the family's own layout (LLaVA-Video: lmms-lab's; the others: transformers', action heads in
            files beside); 'transformers': transformers' own class for every family (LLaVA-Video:
            LlavaOnevisionForConditionalGeneration, refused unless it computes the same logits).
        tokenizer: a tokenizer folder replacing the one the checkpoint carries.
    """

    checkpoint: str
    out: Path
    layout: ExportLayout = "original"
    tokenizer: str | None = None


def export(options: ExportOptions) -> int:
    from llavaction.evaluation.checkpoint_format import EXPORT_COMMAND, check_export_layout, export_model
    from llavaction.evaluation.checkpoints import LoadedCheckpoint
    from llavaction.utils.files import check_apart, check_output_folder, exclusive_output

    check_apart(
        {"--out": options.out}, {"--checkpoint": options.checkpoint, "--tokenizer": options.tokenizer}, folders=True
    )
    with exclusive_output(options.out):
        check_output_folder(options.out, EXPORT_COMMAND)  # before the checkpoint is read; again when written
        loaded = LoadedCheckpoint.open(options.checkpoint, options.tokenizer)
        module = loaded.module(None)
        check_export_layout(module.family, module.config, options.layout)
        export_model(
            module.family,
            module.model,
            module.tokenizer,
            module.video_format,
            options.out,
            is_writer=True,
            layout=options.layout,
        )
    print(f"{options.checkpoint} -> {options.out} ({options.layout} layout, backbone {loaded.backbone})")
    return 0


main = main_of(ExportOptions, export, "llavaction export", __doc__.split("\n\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
