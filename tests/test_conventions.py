"""The conventions a plugin author meets (docs/plugins.md, section 10), and the text codecs
training picks for a graph's vocabulary."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

import tgraph as tg
from tgraph.cli import main
from tgraph.errors import TGraphError
from tgraph.ops import all_ops
from tgraph.train.tasks import ByteVocab, CharVocab, codec_from_meta, text_codec


def test_input_and_param_take_the_shape_before_the_dtype():
    g = tg.Graph("g")
    assert g.input("x", ("B", 4)).type == g.param("w", (4, 2)).type.with_shape(("B", 4))
    assert str(g.input("ids", ("B",), "int64").type) == "int64[B]"
    with pytest.raises(TGraphError, match=r"g.input\(name, shape, dtype\); got shape 'float32'"):
        g.input("y", "float32", (2,))
    with pytest.raises(TGraphError, match=r"g.param\(name, shape, dtype\)"):
        g.param("v", "float32", (2,))


def test_status_lines_go_to_stderr_and_results_to_stdout(tmp_path):
    r = CliRunner().invoke(main, ["build", "gpt", "--preset", "tiny", "-o",
                                  str(tmp_path / "g.json")])
    assert r.exit_code == 0 and r.stdout == "" and r.stderr.startswith("wrote ")
    r = CliRunner().invoke(main, ["run", str(tmp_path / "g.json"), "--random", "--dim", "B=1",
                                  "--dim", "T=4", "-o", str(tmp_path / "out.npz")])
    assert r.exit_code == 0 and r.stdout.startswith("logits: float32[1, 4, 256]")
    assert r.stderr.startswith("wrote 1 output(s)")


def test_ops_lists_every_description_whole():
    out = CliRunner().invoke(main, ["ops"]).stdout
    words = " ".join(out.split())
    for name, op in all_ops().items():
        assert op.describe() and " ".join(op.describe().split()) in words, name
    mask = all_ops()["mask"].describe()
    assert mask.endswith("(only keys within r positions).")  # a docstring wrapped in source


def test_text_maps_to_characters_when_they_fit_else_to_bytes():
    text = "naïve café"
    chars = text_codec(text, None)
    assert isinstance(chars, CharVocab) and chars.size == len(set(text))
    assert chars.decode(chars.encode(text)) == text
    assert isinstance(text_codec(text, len(set(text))), CharVocab)
    utf8 = text_codec(text, 300)  # fits as characters too: characters win
    assert isinstance(utf8, CharVocab)
    many = "".join(map(chr, range(200, 520)))  # 320 characters: only bytes fit 300 ids
    b = text_codec(many, 300)
    assert isinstance(b, ByteVocab) and max(b.encode(many)) < 256
    assert b.decode(b.encode(many)) == many
    with pytest.raises(TGraphError, match=re.escape("needs 320 token ids") + ".*has 100"):
        text_codec(many, 100)
    for codec in (chars, b):
        again = codec_from_meta({"text": codec.to_meta()})
        assert again.decode(again.encode(text)) == text
    assert codec_from_meta({}) is None
