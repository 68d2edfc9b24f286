"""UTF-8 validation of 64 KiB of text beside bytes.decode and a plain copy."""

import pytest

from anynet import _framing, _framing_c

SIZE = 64 * 1024
TEXTS = {
    "ASCII": "The quick brown fox jumps over the lazy dog. ",
    "multi-byte": "Grüße aus Köln, Привет мир, 你好世界, 🙂 ",
}


def text_of(kind):
    encoded = (TEXTS[kind] * (SIZE // len(TEXTS[kind]) + 1)).encode()[:SIZE]
    return encoded.decode("utf-8", "ignore").encode()  # no code point cut at the end


def incremental(module, data):
    validator = module.Utf8Validator()

    def run():
        validator.reset()
        validator.feed(data)
        return validator.finish()

    return run


def validate_with(implementation, data):
    if implementation == "anynet compiled incremental":
        return incremental(_framing_c, data)
    if implementation == "anynet compiled one-shot":
        return lambda: _framing_c.validate_utf8(data)
    if implementation == "anynet python incremental":
        return incremental(_framing, data)
    if implementation == "bytes.decode":
        return lambda: data.decode("utf-8")
    view = memoryview(data)
    return view.tobytes  # the ceiling: touching every byte once


@pytest.mark.parametrize("kind", TEXTS)
@pytest.mark.parametrize(
    "implementation",
    [
        "anynet compiled incremental",
        "anynet compiled one-shot",
        "anynet python incremental",
        "bytes.decode",
        "copy",
    ],
)
def test_utf8_validation(benchmark, kind, implementation):
    benchmark.group = f"UTF-8 validation, 64 KiB {kind}"
    data = text_of(kind)
    result = benchmark(validate_with(implementation, data))
    if implementation.startswith("anynet"):
        assert result is True
