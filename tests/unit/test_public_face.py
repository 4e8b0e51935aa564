"""`vidpipe`'s public names are exactly the ones listed, and each of them resolves."""

from __future__ import annotations

import subprocess
import sys

import vidpipe


def test_every_listed_name_resolves_and_nothing_else_is_offered() -> None:
    for name in vidpipe.__all__:
        assert getattr(vidpipe, name) is not None, name
    assert set(vidpipe._HOMES) == set(vidpipe.__all__) - {"__version__"}


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        vidpipe.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_importing_the_package_does_not_load_the_kafka_client() -> None:
    # Every CLI call imports vidpipe; the publisher's Kafka client is loaded only when used.
    code = (
        "import sys, vidpipe.settings; "
        "print('faststream' in sys.modules, 'aiokafka' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_readme_example_names_are_public() -> None:
    from vidpipe import RequestPublisher, new_request

    request = new_request("a red fox in snow", request_id="order-42")
    assert request.request_id == "order-42"
    assert RequestPublisher.__module__ == "vidpipe.bus.upstream"
