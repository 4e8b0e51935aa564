from vidpipe.bus.upstream import load_ndjson


def test_ndjson_batches_validate_every_line_and_fill_missing_ids() -> None:
    requests, errors = load_ndjson(
        ['{"prompt": "a fox"}', '{"request_id": "r2", "prompt": "an owl", "seconds": 8}', ""]
    )
    assert errors == []
    assert [r.prompt for r in requests] == ["a fox", "an owl"]
    assert requests[0].request_id.startswith("req-")
    assert requests[1].seconds == 8


def test_repeated_ids_and_non_objects_are_errors() -> None:
    _requests, errors = load_ndjson(
        ['{"request_id": "r", "prompt": "x"}', '{"request_id": "r", "prompt": "y"}', "[1]"]
    )
    assert errors == ["line 2: request_id 'r' repeats", "line 3: expected a JSON object"]
