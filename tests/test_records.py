"""The JSONL reader: every malformed record stops the stage with the file and line, never a traceback."""
import json

import pytest

from stages.lib.errors import UserError
from stages.lib.records import EvalOutcome, Instruction, PreferencePair, SftExample, read_jsonl

GOOD = {"key": 1, "prompt": "Name a colour.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}


def _write(path, *lines: bytes):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _line(**changes) -> bytes:
    return json.dumps(GOOD | changes).encode()


def test_good_records_read(tmp_path):
    path = _write(tmp_path / "p.jsonl", _line(), _line(key=2))
    assert [r.key for r in read_jsonl(path, Instruction)] == [1, 2]


@pytest.mark.parametrize("second_line, message", [
    ('{"key": 2, "prompt": "Caf\xe9 au lait.", "instruction_id_list": [], "kwargs": []}'.encode("latin-1"),
     r"p\.jsonl:2: not UTF-8 text \(byte 26 of the line is 0xe9\)"),
    (b'{"key": 2, "prompt": "x", "instruction_id_list": [], "kwargs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
     r"p\.jsonl:2: nested too deeply to read"),
    (b'{"key": 2, "prompt": "x", "instruction_id_list": ["a"], "kwargs": [{"a": ' + b"[" * 40 + b"]" * 40 + b"}]}",
     r"p\.jsonl:2: nested 43 levels deep; records nest at most 32"),
    (b'{"key": 2, "prompt": "x", "instruction_id_list": ["a"], "kwargs": [{"n": NaN}]}',
     r"p\.jsonl:2: NaN is not a JSON number"),
    (b'{"key": 2, "prompt": "x", "instruction_id_list": ["a"], "kwargs": [{"n": -Infinity}]}',
     r"p\.jsonl:2: -Infinity is not a JSON number"),
    (b'{"key": 2, "prompt": "x", "instruction_id_list": ["a"], "kwargs": [{"n": 1e999}]}',
     r"p\.jsonl:2: 1e999 does not fit a 64-bit float"),
    (b'{"key": 2, "key": 3, "prompt": "x", "instruction_id_list": [], "kwargs": []}',
     r"p\.jsonl:2: field 'key' appears twice in one object"),
    (_line(), r"p\.jsonl:2: key 1 was already used on line 1; every record needs its own key"),
    (_line(key="1"), r"p\.jsonl:2: key '1' was already used on line 1"),
    (_line(key=2, prompt=" \t\n "), r"p\.jsonl:2: invalid Instruction record: prompt: Value error, is blank"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, second_line, message):
    path = _write(tmp_path / "p.jsonl", _line(), second_line)
    with pytest.raises(UserError, match=message):
        read_jsonl(path, Instruction)


def test_scores_must_be_finite(tmp_path):
    pair = {"prompt": "p", "chosen": "a", "rejected": "b", "chosen_score": 1.0, "rejected_score": 0.0, "margin": 1.0,
            "rejected_type": "policy", "chosen_source": "policy", "key": 1, "category": "c"}
    path = _write(tmp_path / "pairs.jsonl", json.dumps(pair).replace('"margin": 1.0', '"margin": NaN').encode())
    with pytest.raises(UserError, match=r"pairs\.jsonl:1: NaN is not a JSON number"):
        read_jsonl(path, PreferencePair)


def test_preference_pairs_may_share_a_key(tmp_path):
    """Several pairs come from one instruction: only records that stand for one prompt each need unique keys."""
    pair = {"prompt": "p", "chosen": "a", "rejected": "b", "chosen_score": 1.0, "rejected_score": 0.0, "margin": 1.0,
            "rejected_type": "policy", "chosen_source": "policy", "key": 1, "category": "c"}
    path = _write(tmp_path / "pairs.jsonl", json.dumps(pair).encode(), json.dumps(pair | {"rejected": "c"}).encode())
    assert len(read_jsonl(path, PreferencePair)) == 2
    assert Instruction.unique_key and SftExample.unique_key and EvalOutcome.unique_key
    assert not PreferencePair.unique_key


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    path = _write(tmp_path / "p.jsonl", b"\xef\xbb\xbf" + _line())
    assert read_jsonl(path, Instruction)[0].key == 1
