import json

from whisperctl.results import Segment, Transcript
from whisperctl.writers import format_timestamp, safe_stem, to_json, to_srt, to_tsv, to_txt, to_vtt


def _t():
    return Transcript("a.wav", "Hello there. --> next", [Segment(0.0, 1.5, " Hello there."), Segment(3601.25, 3602.0, " --> next")],
                      "en", 3602.0, {"model": "x"}, {"attention": "sdpa"}, {"total_s": 1.0})


def test_timestamps():
    assert format_timestamp(0) == "00:00.000"
    assert format_timestamp(3661.5, True, ",") == "01:01:01,500"
    assert format_timestamp(59.9996) == "01:00.000"


def test_srt_vtt_tsv_txt():
    t = _t()
    assert to_srt(t) == "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:00:01,250 --> 01:00:02,000\n-> next\n\n"
    assert to_vtt(t).startswith("WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.\n\n01:00:01.250 --> ")
    assert to_tsv(t).splitlines() == ["start\tend\ttext", "0\t1500\tHello there.", "3601250\t3602000\t-> next"]
    assert to_txt(t) == "Hello there.\n--> next\n"
    assert json.loads(to_json(t))["runtime"]["attention"] == "sdpa"


def test_safe_stem_cannot_escape():
    assert safe_stem("../../etc/passwd") == "_.._etc_passwd".strip(" .") or "/" not in safe_stem("../../etc/passwd")
    for bad in ["../x", "/abs/path", "..", ".hidden", "a\x00b", "名前"]:
        s = safe_stem(bad)
        assert "/" not in s and "\x00" not in s and not s.startswith(".") and s
