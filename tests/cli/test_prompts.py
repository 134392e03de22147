"""`llavaction prompts render`: the chat text of every question of a file, one error line for a bad question."""

from llavaction.cli.prompts import main
from llavaction.prompts.encoding import render
from llavaction.prompts.wording import PromptOptions
from llavaction.utils.jsonl import read_jsonl, write_jsonl
from tests.helpers import RECORD


def test_render_command(tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, [RECORD, RECORD | {"narration_id": "P01_01_8", "prior_actions": []}])
    out = tmp_path / "prompts.jsonl"
    assert (
        main(
            [
                "render",
                "--questions",
                str(questions),
                "--task",
                "mqa",
                "--num-frames",
                "16",
                "--time-instruction",
                "--prior-actions",
                "oracle",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = read_jsonl(out)
    assert [r["narration_id"] for r in rows] == ["P01_01_7", "P01_01_8"]
    assert rows[0] == render([RECORD], "mqa", 16, PromptOptions(time_instruction=True), True)[0]
    assert "3.0 seconds ago" in rows[0]["prompt"] and "seconds ago" not in rows[1]["prompt"]
    assert rows[0]["prompt"].endswith("<|im_start|>assistant\n") and rows[0]["answer"] == "B. open drawer"
    capsys.readouterr()
    write_jsonl(questions, [RECORD | {"answer_index": 9}])
    assert (
        main(["render", "--questions", str(questions), "--task", "mqa", "--num-frames", "16", "--out", str(out)]) == 2
    )
    assert capsys.readouterr().err.strip() == "error: P01_01_7: answer_index 9 outside its 5 options"
