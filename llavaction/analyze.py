"""What a model gets wrong: an HTML report of an EK-100-MQA evaluation that opens from disk.

    python -m llavaction.analyze results/val_mqa --shards shards/val_mqa --annotations epic-kitchens-100-annotations \
        [--compare results/other_model] --out report/

Reads predictions.jsonl of `llavaction.evaluate mqa`, the questions' metadata and frames from their shards, and class
names from the annotations (else from the questions). Writes report/index.html (plain HTML and JavaScript, no external
assets), the figures as PNG, frame strips of the gallery, and analysis.json with every table. Every figure follows one
rule, the run's headline rule (the paper's rule on greedy answers, or the best score): the accuracy bars count
`correct`, the confusion matrices and the gallery's "chosen" mark the option that rule chose (`none` when the answer
matches no option); the letter the answer names is shown beside it, labelled as such. Every string from the inputs is
escaped for where it appears in the HTML.
"""

from __future__ import annotations

import hashlib
import html
import random
import sys
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from llavaction.cli_errors import ArgumentParser, add_debug_flag, count, run_cli
from llavaction.figures import accuracy_bars, confusion_heatmap, frame_strip, save_png
from llavaction.files import atomic_output, exclusive_output, safe_name
from llavaction.jsonl import read_jsonl, write_json
from llavaction.metrics import choice_index
from llavaction.shards import frame_name, iter_samples, location_sizes, sample_meta

DURATION_BINS = (0.0, 1.0, 2.0, 4.0, 8.0, float("inf"))
STRIP_FRAMES, STRIP_HEIGHT = 8, 112
PAGE_SIZE = 40


# What every prediction record needs for the report.
REQUIRED_FIELDS = ("narration_id", "options", "answer_index", "correct", "verb_class", "noun_class")


def load_predictions(folder: Path) -> list[dict]:
    """predictions.jsonl of an evaluation folder; an empty file, a record missing a field the report needs, or a
    question id given twice is an error naming the file (and line)."""
    path = folder / "predictions.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `python -m llavaction.evaluate mqa ... --out {folder}` first")
    records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path}: holds no prediction")
    seen = {}
    for number, record in enumerate(records, start=1):
        missing = [field for field in REQUIRED_FIELDS if field not in record]
        if missing:
            raise ValueError(f"{path}:{number}: a prediction without {', '.join(missing)}")
        if record["narration_id"] in seen:
            raise ValueError(
                f"{path}:{number}: question {record['narration_id']} appears twice (first on line "
                f"{seen[record['narration_id']]}); each question must count once"
            )
        seen[record["narration_id"]] = number
    return records


def paired(predictions: list[dict], other: list[dict], intersection: bool, where: Path) -> tuple[list, dict]:
    """The predictions and the other model's, by id, on the same questions: different question sets are an error
    giving the overlap, unless `intersection` keeps the questions both answered."""
    mine, theirs = {r["narration_id"] for r in predictions}, {r["narration_id"]: r for r in other}
    if mine != set(theirs):
        shared = len(mine & set(theirs))
        if not intersection or not shared:
            raise ValueError(
                f"{where}: the two evaluations answered different questions ({len(mine)} and {len(theirs)}, "
                f"{shared} in both); compare them on the {shared} shared ones with --intersection"
            )
        predictions = [r for r in predictions if r["narration_id"] in theirs]
        theirs = {k: v for k, v in theirs.items() if k in mine}
    return predictions, theirs


def strip_file(narration_id: str) -> str:
    """A safe, distinct file name for a question's strip, whatever its id holds."""
    return f"{safe_name(narration_id)[:60]}-{hashlib.sha1(narration_id.encode()).hexdigest()[:8]}.jpg"


def text(value) -> str:
    """A value as HTML text or a quoted attribute value."""
    return html.escape(str(value), quote=True)


def class_names(annotations: Path | None, metas: dict[str, dict]) -> tuple[dict[int, str], dict[int, str]]:
    """Verb and noun names: the annotations' class keys (noun texts as the prompts word them), else the questions'."""
    if annotations is not None:
        from llavaction.epic import VERB_CLASSES_FILE, noun_class_files, noun_text, read_class_keys

        verbs = dict(enumerate(read_class_keys(annotations / VERB_CLASSES_FILE)))
        nouns = read_class_keys(noun_class_files(annotations)[0])
        return verbs, {i: noun_text(k) for i, k in enumerate(nouns)}
    verbs, nouns = {}, {}
    for meta in metas.values():
        verb, _, noun = (meta.get("action_text") or "").partition(" ")
        verbs.setdefault(meta.get("verb_class"), meta.get("verb_text") or verb)
        nouns.setdefault(meta.get("noun_class"), meta.get("noun_text") or noun)
    return verbs, nouns


def chosen_class(record: dict, part: int) -> int | None:
    """The verb (part 0) or noun (1) of the option the headline rule chose; None when it chose none."""
    index = choice_index(record)
    if index is None or not record.get("option_actions"):
        return None
    return int(record["option_actions"][index].split(":")[part])


def accuracy_table(rows: list[dict], key, names: dict | None = None, tails: dict | None = None) -> list[dict]:
    groups = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row["correct"])
    table = []
    for value, hits in sorted(groups.items(), key=lambda item: (-len(item[1]), str(item[0]))):
        entry = {
            "key": value,
            "count": len(hits),
            "correct": int(sum(hits)),
            "accuracy": round(100.0 * sum(hits) / len(hits), 2),
        }
        if names is not None:
            entry["name"] = names.get(value, str(value))
        if tails is not None:
            entry["tail"] = bool(tails.get(value))
        table.append(entry)
    return table


def confusion(rows: list[dict], part: int, names: dict, top: int) -> dict:
    """Counts of (true class, class of the option the headline rule chose) over the most frequent true classes;
    'none' when the answer matches no option."""
    field = ("verb_class", "noun_class")[part]
    frequent = [c for c, _ in Counter(r[field] for r in rows).most_common(top)]
    columns = frequent + ["other", "none"]
    matrix = np.zeros((len(frequent), len(columns)), dtype=int)
    for row in rows:
        if row[field] not in frequent:
            continue
        chosen = chosen_class(row, part)
        column = "none" if chosen is None else (chosen if chosen in frequent else "other")
        matrix[frequent.index(row[field]), columns.index(column)] += 1
    return {
        "rows": [names.get(c, str(c)) for c in frequent],
        "columns": [names.get(c, str(c)) if isinstance(c, int) else c for c in columns],
        "counts": matrix.tolist(),
    }


def sharing_options(row: dict) -> int:
    """How many wrong options share the answer's verb or noun (how hard the distractors were)."""
    answer = (row["verb_class"], row["noun_class"])
    actions = [tuple(int(x) for x in a.split(":")) for a in row.get("option_actions") or []]
    return sum(1 for a in actions if a != answer and (a[0] == answer[0] or a[1] == answer[1]))


def tables(rows: list[dict], verbs: dict, nouns: dict) -> dict:
    verb_tails = {r["verb_class"]: r.get("verb_tail") for r in rows}
    noun_tails = {r["noun_class"]: r.get("noun_tail") for r in rows}

    def duration_bin(row):
        length = row["stop_sec"] - row["start_sec"]
        index = next(i for i in range(len(DURATION_BINS) - 1) if length < DURATION_BINS[i + 1])
        high = DURATION_BINS[index + 1]
        return f"{DURATION_BINS[index]:g}-{high:g} s" if high != float("inf") else f">= {DURATION_BINS[index]:g} s"

    return {
        "count": len(rows),
        "accuracy": round(100.0 * sum(r["correct"] for r in rows) / max(1, len(rows)), 2),
        "by_verb": accuracy_table(rows, lambda r: r["verb_class"], verbs, verb_tails),
        "by_noun": accuracy_table(rows, lambda r: r["noun_class"], nouns, noun_tails),
        "by_duration": sorted(
            accuracy_table(rows, duration_bin), key=lambda e: float(e["key"].split("-")[0].lstrip(">= ").split()[0])
        ),
        "by_options_sharing_verb_or_noun": sorted(accuracy_table(rows, sharing_options), key=lambda e: e["key"]),
        "by_participants": accuracy_table(rows, lambda r: "unseen" if r.get("unseen_participant") else "seen"),
        "verb_confusion": confusion(rows, 0, verbs, 15),
        "noun_confusion": confusion(rows, 1, nouns, 15),
    }


def save_figures(analysis: dict, out: Path) -> list[tuple[str, str]]:
    """The tables as PNG figures: [(file name, title)]."""
    figures = []

    def save(figure, name: str, title: str) -> None:
        save_png(figure, out / name)
        figures.append((name, title))

    def bars(name: str, title: str, entries: list[dict], label: str) -> None:
        entries = entries[:40]
        figure = accuracy_bars(
            [f"{e.get('name', e['key'])} ({e['count']})" for e in entries],
            [e["accuracy"] for e in entries],
            xlabel=label,
            title=title,
            colours=["#d95f02" if e.get("tail") else "#1b9e77" for e in entries],
        )
        save(figure, name, title)

    bars("verbs.png", "Accuracy by verb (most frequent first; tail classes orange)", analysis["by_verb"], "verb (n)")
    bars("nouns.png", "Accuracy by noun (most frequent first; tail classes orange)", analysis["by_noun"], "noun (n)")
    bars("duration.png", "Accuracy by segment duration", analysis["by_duration"], "duration")
    bars(
        "hardness.png",
        "Accuracy by wrong options sharing the answer's verb or noun",
        analysis["by_options_sharing_verb_or_noun"],
        "options sharing verb or noun",
    )
    bars("participants.png", "Seen and unseen participants", analysis["by_participants"], "participants")
    for kind in ("verb", "noun"):
        matrix = analysis[f"{kind}_confusion"]
        figure = confusion_heatmap(
            np.array(matrix["counts"]),
            matrix["rows"],
            matrix["columns"],
            kind=kind,
            title=f"{kind.title()} confusion (row-normalised)",
        )
        save(figure, f"{kind}_confusion.png", f"{kind.title()} confusion of the most frequent {kind}s")
    return figures


def strip_image(sample: dict, path: Path) -> None:
    """Up to STRIP_FRAMES frames side by side, upscaled (nearest neighbour) to at least STRIP_HEIGHT pixels."""
    import simplejpeg

    from llavaction.data.stages import frame_indices

    meta = sample_meta(sample)
    count = min(STRIP_FRAMES, meta["num_frames"])
    frames = [
        simplejpeg.decode_jpeg(sample[frame_name(i)], colorspace="RGB")
        for i in frame_indices(meta["num_frames"], count)
    ]
    row = frame_strip(frames, STRIP_HEIGHT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(simplejpeg.encode_jpeg(np.ascontiguousarray(row), quality=85, colorspace="RGB"))


def gallery_items(rows: list[dict], other: dict[str, dict] | None, limit: int, seed: int) -> tuple[list, str]:
    """The wrong answers (or, comparing two models, the questions exactly one gets right), a seeded sample when more
    than `limit`; and a sentence saying which."""
    if other is None:
        chosen = [(r, "wrong") for r in rows if not r["correct"]]
        what = "wrong answers"
    else:
        chosen = [
            (r, "only this model right" if r["correct"] else "only the other model right")
            for r in rows
            if r["narration_id"] in other and r["correct"] != other[r["narration_id"]]["correct"]
        ]
        what = "questions one model gets right and the other wrong"
    total = len(chosen)
    if total > limit:
        chosen = sorted(random.Random(seed).sample(chosen, limit), key=lambda item: item[0]["narration_id"])
        return chosen, f"{limit} of the {total} {what} (a seeded sample; --gallery-size shows more)"
    return chosen, f"all {total} {what}"


def item_html(row: dict, kind: str, verbs: dict, nouns: dict, other: dict | None) -> str:
    """One gallery item; every input string escaped for its place (text, attribute, URL)."""
    chosen, letter = choice_index(row), row.get("letter_choice_index")
    options = []
    for i, option in enumerate(row["options"]):
        marks = (" ✓ answer" if i == row.get("answer_index") else "") + (" ← chosen" if i == chosen else "")
        marks += " (letter named)" if letter is not None and i == letter and letter != chosen else ""
        options.append(f"<li>{chr(65 + i)}. {text(option)}<b>{marks}</b></li>")
    if chosen is None:
        options.append("<li><b>the answer matches no option</b></li>")
    generated = f"<p class=gen>answered: {text(row['generation'])}</p>" if row.get("generation") else ""
    if other is not None and row["narration_id"] in other:
        theirs = other[row["narration_id"]]
        answer = theirs.get("generation") or choice_index(theirs)
        generated += f"<p class=gen>other model: {text(answer)}</p>"
    verb, noun = verbs.get(row["verb_class"], ""), nouns.get(row["noun_class"], "")
    source = urllib.parse.quote(f"strips/{strip_file(row['narration_id'])}")
    return (
        f'<div class=item data-verb="{text(verb)}" data-noun="{text(noun)}">'
        f'<img loading=lazy src="{text(source)}" alt="frames of {text(row["narration_id"])}">'
        f"<p><b>{text(row['narration_id'])}</b> — {text(verb)} {text(noun)} — {text(kind)}</p>"
        f"<ul>{''.join(options)}</ul>{generated}</div>"
    )


PAGE_SCRIPT = """
const items = Array.from(document.querySelectorAll('.item'));
let page = 0;
function shown() {
  const verb = document.getElementById('verb').value, noun = document.getElementById('noun').value;
  return items.filter(i => (!verb || i.dataset.verb === verb) && (!noun || i.dataset.noun === noun));
}
function render() {
  const list = shown(), pages = Math.max(1, Math.ceil(list.length / PAGE));
  page = Math.min(page, pages - 1);
  items.forEach(i => { i.style.display = 'none'; });
  list.slice(page * PAGE, (page + 1) * PAGE).forEach(i => { i.style.display = ''; });
  document.getElementById('pageinfo').textContent = `page ${page + 1} of ${pages} (${list.length} items)`;
}
document.getElementById('verb').onchange = document.getElementById('noun').onchange = () => { page = 0; render(); };
document.getElementById('prev').onclick = () => { page = Math.max(0, page - 1); render(); };
document.getElementById('next').onclick = () => { page += 1; render(); };
render();
window.addEventListener('load', () => {
  const broken = Array.from(document.querySelectorAll('img.figure')).filter(i => !i.naturalWidth).length;
  document.body.dataset.brokenFigures = broken;
  document.body.dataset.status = 'ready';
});
"""


def write_html(
    out: Path,
    title: str,
    analysis: dict,
    figures: list,
    items: list[str],
    gallery_note: str,
    verbs: list[str],
    nouns: list[str],
) -> None:
    def select(name, values):
        choices = "".join(f"<option>{text(v)}</option>" for v in sorted(set(values)))
        return f'<label>{name} <select id={name}><option value="">all</option>{choices}</select></label>'

    body = [
        f"<h1>{text(title)}</h1>",
        f"<p>{analysis['count']} questions, accuracy {analysis['accuracy']:.2f}% by {text(analysis['rule'])}; every "
        "figure and the gallery's “chosen” follow that rule. Tables: analysis.json.</p>",
    ]
    body.append("<div class=figures>")
    body += [
        f'<figure><img class=figure src="{text(urllib.parse.quote(name))}" alt="{text(t)}"><figcaption>{text(t)}'
        "</figcaption></figure>"
        for name, t in figures
    ]
    body.append("</div>")
    body += [
        f"<h2>Gallery: {text(gallery_note)}</h2>",
        select("verb", verbs),
        select("noun", nouns),
        "<button id=prev>previous</button><button id=next>next</button> <span id=pageinfo></span>",
        "<div id=gallery>",
        *items,
        "</div>",
    ]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}img.figure{max-width:100%}"
        ".figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1em}"
        "figure{margin:0}figcaption{font-size:.9em;color:#333}"
        ".item{border:1px solid #ccc;margin:.6em 0;padding:.5em}.item img{max-width:100%;height:auto}"
        ".gen{color:#555}ul{margin:.2em 0;list-style:none;padding-left:1em}"
    )
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{text(title)}</title><style>{style}"
        f"</style></head><body>{''.join(body)}<script>const PAGE={PAGE_SIZE};{PAGE_SCRIPT}</script></body></html>"
    )
    with atomic_output(out / "index.html") as stream:
        stream.write(page)


def analyze(
    folder: Path,
    shards: list[str],
    out: Path,
    annotations: Path | None = None,
    compare: Path | None = None,
    gallery_size: int = 500,
    seed: int = 0,
    intersection: bool = False,
) -> dict:
    predictions = load_predictions(folder)
    other = None
    if compare:
        predictions, other = paired(predictions, load_predictions(compare), intersection, compare)
    wanted = {r["narration_id"] for r in predictions}
    sizes = location_sizes(shards)
    metas = {}
    for sample in iter_samples(sizes, sizes):
        if sample["__key__"] in wanted:
            metas[sample["__key__"]] = sample_meta(sample)
    missing = sorted(wanted - set(metas))
    if missing:
        raise ValueError(f"{len(missing)} predicted questions are not in the shards, e.g. {missing[:5]}")
    rows = [r | {k: metas[r["narration_id"]][k] for k in ("start_sec", "stop_sec")} for r in predictions]
    verbs, nouns = class_names(annotations, metas)
    analysis = tables(rows, verbs, nouns)
    generated = any(r.get("generation") is not None for r in rows)
    analysis["rule"] = "the paper's rule on greedy answers" if generated else "the best-scoring option"
    out.mkdir(parents=True, exist_ok=True)
    figures = save_figures(analysis, out)
    chosen, note = gallery_items(rows, other, gallery_size, seed)
    if compare and intersection:
        note += f" (on the {len(rows)} questions both evaluations answered)"
    keep = {row["narration_id"] for row, _ in chosen}
    for sample in iter_samples(sizes, sizes):
        if sample["__key__"] in keep:
            strip_image(sample, out / "strips" / strip_file(sample["__key__"]))
    items = [item_html(row, kind, verbs, nouns, other) for row, kind in chosen]
    analysis["gallery"] = {"note": note, "items": sorted(keep)}
    write_json(out / "analysis.json", analysis)
    write_html(
        out,
        f"EK-100-MQA errors of {folder}",
        analysis,
        figures,
        items,
        note,
        [verbs.get(r["verb_class"], "") for r, _ in chosen],
        [nouns.get(r["noun_class"], "") for r, _ in chosen],
    )
    return analysis


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path, help="an output folder of `llavaction.evaluate mqa`")
    parser.add_argument("--shards", nargs="+", required=True, help="the questions' shard sets (frames, metadata)")
    parser.add_argument("--annotations", type=Path, help="EK-100 annotation folder, for class names")
    parser.add_argument("--compare", type=Path, help="another model's output folder on the same questions")
    parser.add_argument(
        "--intersection", action="store_true", help="with --compare: compare on the questions both answered"
    )
    parser.add_argument("--gallery-size", type=count(1), default=500, help="questions shown at most (a seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        with exclusive_output(args.out):
            return report()

    def report() -> int:
        result = analyze(
            args.results,
            args.shards,
            args.out,
            args.annotations,
            args.compare,
            args.gallery_size,
            args.seed,
            args.intersection,
        )
        print(f"report of {result['count']} questions -> {args.out / 'index.html'}", file=sys.stderr)
        return 0

    return run_cli(run, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
