"""What a build reads, checked: segments that end past their video's end (EPIC_100_video_info.csv: no frames exist
there; EK-100's own CSVs stop at most a rounding past it, 0.014 s once in the validation split, so a tolerance keeps
those), and the optional CSVs whose absence changes figures."""

from __future__ import annotations

from llavaction.ek100.annotations import SPLIT_FILES, AnnotationError, EpicAnnotations, SkippedRow

END_TOLERANCE_SEC = 1.0


def drop_past_video_end(ann: EpicAnnotations, skip_bad: bool) -> None:
    """Refuse (or, with skip_bad, skip and list) the split's segments ending more than END_TOLERANCE_SEC after their
    video, when video_info knows the video."""
    path = ann.root / SPLIT_FILES[ann.split]
    kept = []
    for segment in ann.segments:
        video = ann.videos.get(segment.video_id)
        if video is None or segment.stop_sec <= video.duration_sec + END_TOLERANCE_SEC:
            kept.append(segment)
            continue
        reason = (
            f"{segment.narration_id} ends at {segment.stop_sec:.2f} s, past the end of {segment.video_id} "
            f"({video.duration_sec:.2f} s in EPIC_100_video_info.csv)"
        )
        if not skip_bad:
            raise AnnotationError(path, segment.row + 2, reason)
        ann.skipped.append(SkippedRow(str(path), segment.row + 2, reason, {"narration_id": segment.narration_id}))
    ann.segments[:] = kept


def absent_inputs(ann: EpicAnnotations) -> list[str]:
    """The optional CSVs the folder lacks and what their absence changes (the other split's, tail and unseen
    breakdowns, fps)."""
    other = "validation" if ann.split == "train" else "train"
    pools = f"the action vocabulary (action_index) and the narration options come from the {ann.split} split alone"
    counted = "" if other == "validation" else "; hard distractors are weighted by this split's own action counts"
    effects = {
        SPLIT_FILES[other]: pools + counted,
        "EPIC_100_tail_verbs.csv": "no verb is tail",
        "EPIC_100_tail_nouns.csv": "no noun is tail",
        f"EPIC_100_unseen_participant_ids_{ann.split}.csv": "no participant is unseen",
        "EPIC_100_video_info.csv": "fps and video lengths unknown",
    }
    return [f"{name} ({effect})" for name, effect in effects.items() if not (ann.root / name).exists()]
