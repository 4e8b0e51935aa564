from vidpipe.dev.emulator.config import parse_directives


def test_a_directive_scoped_to_one_protocol_is_ignored_by_the_other() -> None:
    prompt = "a fox [emulator:azure.download=missing] [emulator:retention=40]"
    assert parse_directives(prompt, "azure").download == "missing"
    assert parse_directives(prompt, "openai").download is None
    assert parse_directives(prompt, "openai").retention == 40
