"""The analysis report's page: the gallery's items and index.html (plain HTML and JavaScript, no external assets),
every string from the inputs escaped for where it appears (text, attribute or URL)."""

from __future__ import annotations

import hashlib
import html
import urllib.parse
from pathlib import Path

from llavaction.benchmark.answers import choice_index
from llavaction.benchmark.uncertainty import p_value_text
from llavaction.utils.files import atomic_output, safe_name

PAGE_SIZE = 40


def strip_file(narration_id: str) -> str:
    """A safe, distinct file name for a question's strip, whatever its id holds."""
    return f"{safe_name(narration_id)[:60]}-{hashlib.sha1(narration_id.encode()).hexdigest()[:8]}.jpg"


def text(value) -> str:
    """A value as HTML text or a quoted attribute value."""
    return html.escape(str(value), quote=True)


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

    interval = analysis.get("accuracy_interval")
    around = (
        f" [{interval['low']:.2f}, {interval['high']:.2f}] (95% interval, bootstrap over {interval['clusters']} "
        f"videos, {interval['resamples']} resamples)"
        if interval
        else ""
    )
    body = [
        f"<h1>{text(title)}</h1>",
        f"<p>{analysis['count']} questions, accuracy {analysis['accuracy']:.2f}%{around} by "
        f"{text(analysis['rule'])}; every figure and the gallery's “chosen” follow that rule. Tables: "
        "analysis.json.</p>",
    ]
    if "comparison" in analysis:
        c, d = analysis["comparison"], analysis["comparison"]["difference"]
        body.append(
            f"<p>Against {text(c['a'])}: {d['value']:+.2f} points [{d['low']:+.2f}, {d['high']:+.2f}] (95% interval, "
            f"bootstrap over {d['clusters']} videos), paired p = {p_value_text(c['p_value'])} on {c['questions']} "
            "questions.</p>"
        )
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
