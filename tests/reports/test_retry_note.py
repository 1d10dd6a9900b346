"""The report's note on out-of-memory retries (issue #30, item 4)."""

from __future__ import annotations

from reports.collect import Record, retry_note


def _record(job_id: str, micro: int | None, attempt: int = 1) -> Record:
    result = {"val_acc": 0.9, "micro_batch": micro, "attempt": attempt}
    return Record(job_id=job_id, point={}, config={"batch_size": 32}, status="completed", reason="", result=result)


def test_the_report_names_the_runs_an_out_of_memory_retry_trained_in_smaller_micro_batches() -> None:
    assert retry_note([_record("a", 32), _record("b", None)]) is None  # run whole, or stored before the key
    note = retry_note([_record("a", 32), _record("b", 8, attempt=3)])
    assert note is not None and "b (micro-batch 8, attempt 3)" in note and "a (" not in note
    assert "same rows in each optimizer step" in note
