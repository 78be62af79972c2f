"""Runs side by side (issue 23): the per-edit-type means of several eval summaries, a column per run."""

from __future__ import annotations

from leditspp.evaluation.compare import comparison_markdown, comparison_rows, write_comparison


def _summary(per_edit_type, failed=0, items=4):
    return {"items": items, "failed": failed, "errors": [], "per_suite": {}, "per_edit_type": per_edit_type}


def test_rows_align_each_metric_across_runs_and_mark_what_a_run_lacks():
    unet = _summary({"add": {"success": 0.5, "others_kept": 0.4}, "remove (noise mask)": {"mask_iou": 0.2}})
    flow = _summary({"add": {"success": 1.0, "change_ratio": 0.1}, "recolour": {"success": 0.25}})
    rows = comparison_rows({"demo": unet, "demo-flow": flow})
    assert rows == [
        ("add", "success", [0.5, 1.0]),
        ("add", "others_kept", [0.4, None]),
        ("add", "change_ratio", [None, 0.1]),
        ("remove (noise mask)", "mask_iou", [0.2, None]),
        ("recolour", "success", [None, 0.25]),
    ]


def test_markdown_and_html_are_written_with_every_run(tmp_path):
    summaries = {"demo": _summary({"add": {"success": 0.5}}), "demo-flow": _summary({"add": {"success": 1.0}}, 1)}
    text = comparison_markdown(summaries)
    assert "| edit type | metric | demo | demo-flow |" in text and "| add | success | 0.500 | 1.000 |" in text
    assert "demo-flow: 1 of 4" in text
    md, page = write_comparison(tmp_path, summaries, "shapes: demo vs demo-flow")
    assert md.read_text().startswith("# shapes: demo vs demo-flow") and "<td>1.000</td>" in page.read_text()
    assert "demo-flow/report.html" in page.read_text()


def test_eval_runs_both_demo_models_side_by_side(tmp_path):
    import json

    from leditspp.cli import main

    out = tmp_path / "both"
    args = ["eval", "shapes", "--model", "demo,demo-flow", "--device", "cpu", "--scenes", "1", "--steps", "4"]
    assert main([*args, "--quiet", "-o", str(out)]) == 0
    for model in ("demo", "demo-flow"):
        assert json.loads((out / model / "summary.json").read_text())["items"] == 7
    table = (out / "comparison.md").read_text()
    assert "| edit type | metric | demo | demo-flow |" in table and "| remove (attention mask) | mask_iou |" in table
    assert "demo-flow/report.html" in (out / "comparison.html").read_text()
    assert main([*args, "--quiet", "-o", str(tmp_path / "same"), "--model", "demo,demo"]) == 2
