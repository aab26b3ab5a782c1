"""The records folder's owner (preprocessing/records.py): file headers and the settings of the records."""

import dataclasses
import io
import re
import struct

import numpy as np
import pytest

from preprocessing import records
from preprocessing.records import RecordsError, RecordSettings


def _record(frames=6, side=32, fps=6.0, flow_method="opencv"):
    from preprocessing.schema import encode_example

    rng = np.random.default_rng(0)
    return encode_example(video_id="v0", dataset="toyota", fps=fps, num_classes=31, labels=[3], label_start=[0.0],
                          label_end=[1.0], rgb=rng.integers(0, 256, (frames, side, side + 8, 3), dtype=np.uint8),
                          flow=rng.integers(0, 256, (frames - 1, side, side + 8, 2), dtype=np.uint8),
                          flow_method=flow_method, segmenter="none")


def test_the_header_is_read_without_the_frames_and_agrees_with_the_whole_record(tmp_path, monkeypatch):
    from preprocessing.loader import encode_records

    data = _record()
    path = tmp_path / "a.tfrecord"
    path.write_bytes(encode_records([data, _record(fps=12.0)]))
    read = []
    real_open = records._open

    def counting_open(p):
        handle = real_open(p)
        original = handle.read

        def counted(size=-1):
            chunk = original(size)
            read.append(len(chunk))
            return chunk
        handle.read = counted
        return handle

    monkeypatch.setattr(records, "_open", counting_open)
    header = records.read_header(str(path))
    assert header == records.parse_header(data, str(path))
    assert (header.dataset, header.num_classes, header.modalities) == ("toyota", 31, ("rgb", "flow"))
    assert header.settings == RecordSettings(dataset="toyota", num_classes=31, fps=6.0, size=32, flow="opencv",
                                             segmenter="none")
    assert records.parse_header(_record(flow_method=None), "x").settings.flow is None  # an older record
    assert sum(read) < len(data) / 4  # the JPEG and PNG frames are skipped, not read


def test_a_file_cut_inside_the_first_records_frames_is_truncated(tmp_path):
    from preprocessing.loader import encode_records

    whole = encode_records([_record()])
    (tmp_path / "cut.tfrecord").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(RecordsError, match=r"cut.tfrecord: truncated TFRecord file \(the first record needs"):
        records.read_header(str(tmp_path / "cut.tfrecord"))
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    assert records.read_header(str(tmp_path / "empty.tfrecord")) is None


def test_settings_round_trip_and_name_their_differences():
    run = RecordSettings(dataset="charades", num_classes=157, fps=6.0, size=256, flow="opencv", segmenter="none")
    assert RecordSettings.from_json({**run.to_json(), "written": 10}) == run
    assert RecordSettings(fps=6.0).to_json() == {"fps": 6.0}
    stored = float(np.float32(29.97))  # what a record's context gives back
    assert RecordSettings(fps=29.97).differences(RecordSettings(fps=stored)) == []
    other = RecordSettings(dataset="charades", fps=12.0, size=256, flow="tensor")
    assert run.differences(other) == ["--fps 6 -> 12", "--flow opencv -> tensor"]
    assert RecordSettings(fps=6.0).merged(RecordSettings(fps=8.0, flow="none")) == RecordSettings(fps=6.0, flow="none")


# -- the wire format written by hand (protobuf encoding, https://protobuf.dev/programming-guides/encoding/) --

def _v(n: int) -> bytes:
    """A varint: 7 bits a byte, low bits first, the top bit set on every byte but the last."""
    out = b""
    while n > 0x7F:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _key(number: int, wire: int) -> bytes:
    return _v(number << 3 | wire)


def _len(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _v(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:  # Feature.bytes_list (1) of one value (1)
    return _len(1, _len(1, value))


def _float_feature(*values: float, packed: bool = True) -> bytes:  # Feature.float_list (2)
    if packed:
        return _len(2, _len(1, b"".join(struct.pack("<f", v) for v in values)))
    return _len(2, b"".join(_key(1, 5) + struct.pack("<f", v) for v in values))


def _int_feature(*values: int, packed: bool = True) -> bytes:  # Feature.int64_list (3)
    if packed:
        return _len(3, _len(1, b"".join(_v(v) for v in values)))
    return _len(3, b"".join(_key(1, 0) + _v(v) for v in values))


def _entry(name: bytes, value: bytes) -> bytes:  # a map<string, Message> entry: key 1, value 2, as field 1
    return _len(1, _len(1, name) + _len(2, value))


def _example(context: dict, lists=(), extra: bytes = b"") -> bytes:
    """A SequenceExample: context (1) = Features, feature_lists (2) = FeatureLists (their values empty)."""
    features = b"".join(_entry(k.encode(), v) for k, v in context.items())
    return extra + _len(1, features) + _len(2, b"".join(_entry(name.encode(), b"") for name in lists))


def _framed(data: bytes) -> bytes:
    """A TFRecord frame: length (uint64), its CRC, the data, the data's CRC (not checked by the reader)."""
    return struct.pack("<Q", len(data)) + b"\0\0\0\0" + data + b"\0\0\0\0"


_CONTEXT = {"dataset": _bytes_feature(b"toyota"), "num_classes": _int_feature(31), "fps": _float_feature(29.97),
            "height": _int_feature(240), "width": _int_feature(320), "flow_method": _bytes_feature(b"opencv"),
            "segmenter": _bytes_feature(b"none")}


def test_the_hand_written_helpers_give_the_documented_bytes():
    assert (_v(0), _v(1), _v(127), _v(128), _v(150), _v(300)) == (b"\x00", b"\x01", b"\x7f", b"\x80\x01",
                                                                   b"\x96\x01", b"\xac\x02")
    assert _key(1, 2) == b"\x0a" and _key(2, 0) == b"\x10" and _key(16, 0) == b"\x80\x01"


def test_varints_decoded_byte_by_byte():
    def varint(data, i=0):
        return records._varint(memoryview(data), i)

    assert varint(b"\x00") == (0, 1)
    assert varint(b"\x7f") == (127, 1)
    assert varint(b"\x80\x01") == (128, 2)
    assert varint(b"\x96\x01\x05") == (150, 2)  # stops at the byte without the top bit
    assert varint(b"\x05\xac\x02", 1) == (300, 3)  # from an offset
    assert varint(b"\xff" * 9 + b"\x01") == (2**64 - 1, 10)  # the longest: ten bytes, the last at shift 63
    for data in (b"", b"\x80", b"\xff\xff", b"\x80" * 10 + b"\x01"):  # cut short, or eleven bytes long
        with pytest.raises(ValueError, match="^truncated varint$"):
            varint(data)


def test_fields_of_each_wire_type_by_hand():
    message = (_key(1, 0) + b"\x96\x01" + _key(2, 1) + b"12345678" + _key(3, 2) + b"\x03abc" + _key(4, 5) + b"wxyz"
               + _key(16, 2) + b"\x00")
    fields = [(n, w, v if isinstance(v, int) else bytes(v)) for n, w, v in records._fields(memoryview(message))]
    assert fields == [(1, 0, 150), (2, 1, b"12345678"), (3, 2, b"abc"), (4, 5, b"wxyz"), (16, 2, b"")]
    assert list(records._fields(memoryview(b""))) == []
    for wire in (3, 4, 6, 7):
        with pytest.raises(ValueError, match=f"^unsupported wire type {wire}$"):
            list(records._fields(memoryview(_key(1, wire) + b"\x00" * 8)))
    for cut in (_key(1, 1) + b"1234567", _key(1, 2) + b"\x04abc", _key(1, 5) + b"xyz"):  # one byte short
        with pytest.raises(ValueError, match="^truncated field$"):
            list(records._fields(memoryview(cut)))


def test_a_header_written_by_hand_is_parsed_field_by_field():
    header = records.parse_header(_example(_CONTEXT, ["rgb", "flow_x", "flow_y", "object"]), "a.tfrecord")
    assert header == records.RecordHeader(file="a.tfrecord", dataset="toyota", num_classes=31,
                                          modalities=("rgb", "flow", "object"), fps=float(np.float32(29.97)),
                                          height=240, width=320, flow="opencv", segmenter="none")
    assert header.settings == RecordSettings(dataset="toyota", num_classes=31, fps=float(np.float32(29.97)), size=240,
                                             flow="opencv", segmenter="none")


def test_each_kind_of_feature_value_packed_or_not():
    def value(feature):
        return records._feature_value(memoryview(feature))

    assert value(_int_feature(300, 7)) == 300  # packed int64 (wire 2): the first value
    assert value(_int_feature(300, 7, packed=False)) == 300  # one varint field per value (wire 0)
    assert value(_float_feature(0.5, 2.0)) == 0.5  # packed float (wire 2)
    assert value(_float_feature(0.25, 2.0, packed=False)) == 0.25  # fixed32 fields (wire 5)
    assert value(_bytes_feature(b"charades")) == "charades"
    assert value(_bytes_feature(b"ab\xff")) == "ab\ufffd"  # not UTF-8: replaced, not refused
    assert value(b"") is None  # no kind
    assert value(_len(3, b"")) is None  # an empty int64 list
    assert value(_len(3, b"") + _int_feature(5)) == 5  # the first kind that has a value


def test_map_entries_skip_other_fields_and_default_their_key_and_value():
    message = (_entry(b"a", b"xy") + _key(2, 2) + b"\x00" + _key(1, 0) + b"\x01"  # field 2, and field 1 as a varint
               + _len(1, _len(2, b"v")) + _len(1, _len(1, b"k")) + _len(1, _key(3, 0) + b"\x01" + _len(1, b"b")
                                                                         + _key(2, 0) + b"\x02"))
    entries = {k: bytes(v) for k, v in records._map_entries(memoryview(message)).items()}
    assert entries == {"a": b"xy", "": b"v", "k": b"", "b": b""}


def test_modalities_need_every_feature_list_of_theirs():
    def modalities(*lists):
        return records.parse_header(_example(_CONTEXT, lists), "x").modalities

    assert modalities("rgb") == ("rgb",)
    assert modalities("object", "flow_y", "flow_x") == ("flow", "object")  # in MODALITY_KEYS' order
    assert modalities("rgb", "flow_x") == ("rgb",)  # flow needs flow_x and flow_y
    assert modalities() == ()


def test_a_header_without_optional_keys_and_with_unpacked_numbers():
    context = {"num_classes": _int_feature(157, packed=False), "dataset": _bytes_feature(b"charades"),
               "fps": _float_feature(6.0, packed=False), "height": _len(3, b"")}
    header = records.parse_header(_example(context, ["rgb"]), "c.tfrecord")
    assert header == records.RecordHeader(file="c.tfrecord", dataset="charades", num_classes=157, modalities=("rgb",),
                                          fps=6.0)
    assert header.settings == RecordSettings(dataset="charades", num_classes=157, fps=6.0)
    assert header.describe() == "charades records with 157 classes and rgb at 6 fps"


def test_top_level_fields_other_than_the_context_and_lists_are_ignored(tmp_path):
    extra = _key(3, 2) + b"\x01z" + _key(4, 0) + b"\x05"
    data = _example(_CONTEXT, ["rgb"], extra=extra) + _key(1, 0) + b"\x07" + _key(2, 5) + b"abcd"
    header = records.parse_header(data, "x")
    assert (header.dataset, header.num_classes, header.modalities) == ("toyota", 31, ("rgb",))
    path = tmp_path / "h.tfrecord"
    path.write_bytes(_framed(data))
    assert records.read_header(str(path)) == dataclasses.replace(header, file=str(path))


def test_missing_context_keys_are_named():
    message = (r"^x.tfrecord: the record has no context key\(s\) {}: not written by `assemblenet preprocess` "
               r"\(preprocessing/schema.py\)$")
    with pytest.raises(RecordsError, match=message.format(r"\['num_classes'\]")):
        records.parse_header(_example({"dataset": _bytes_feature(b"toyota")}), "x.tfrecord")
    with pytest.raises(RecordsError, match=message.format(r"\['dataset'\]")):
        records.parse_header(_example({"num_classes": _int_feature(31)}), "x.tfrecord")
    with pytest.raises(RecordsError, match=message.format(r"\['dataset', 'num_classes'\]")):
        records.parse_header(_example({"dataset": b"", "num_classes": _len(3, b"")}), "x.tfrecord")
    with pytest.raises(RecordsError, match=message.format(r"\['dataset', 'num_classes'\]")):
        records.parse_header(b"", "x.tfrecord")
    assert records.parse_header(_example({"dataset": _bytes_feature(b""), "num_classes": _int_feature(0)}),
                                "x").num_classes == 0  # empty and zero values are values


@pytest.mark.parametrize("data, reason", [
    (b"\x0b", "unsupported wire type 3"),  # the message itself
    (_len(1, b"\x0b"), "unsupported wire type 3"),  # the context
    (_len(1, _entry(b"fps", _len(2, b"\x0b"))), "unsupported wire type 3"),  # a feature
    (_len(2, _entry(b"\xff", b"")), "'utf-8' codec can't decode byte 0xff"),  # a feature list's name
    (_len(1, _entry(b"\xff", b"")), "'utf-8' codec can't decode byte 0xff"),  # a context key
    (_len(1, b"\x0a\x05ab"), "truncated field"),
    (b"\x0a\x80", "truncated varint"),
])
def test_what_is_not_a_sequence_example_is_refused_naming_the_file(data, reason):
    with pytest.raises(RecordsError, match=rf"^b.tfrecord: not a tf.train.SequenceExample \({reason}"):
        records.parse_header(data, "b.tfrecord")


# -- reading a file's header: the stream that skips the frames -------------------------------------------

def test_read_header_skips_every_kind_of_field_and_agrees_with_parse_header(tmp_path):
    lists = (_key(2, 0) + b"\x01"  # not a map entry
             + _entry(b"rgb", _len(1, b"frame" * 20))  # a value to skip
             + _len(1, _key(3, 5) + b"abcd" + _len(1, b"flow_x") + _key(4, 1) + b"12345678")  # other fields
             + _len(1, _len(1, b"flow_y")))
    data = (_key(1, 0) + b"\xff" * 9 + b"\x01"  # field 1 as a ten-byte varint: skipped, not a context
            + _key(4, 1) + b"12345678" + _key(5, 5) + b"abcd" + _len(3, b"x" * 300)
            + _len(2, lists) + _len(1, b"".join(_entry(k.encode(), v) for k, v in _CONTEXT.items()))
            + _len(2, _len(1, _len(1, b"object"))))  # a second feature_lists: its names are added
    path = tmp_path / "a.tfrecord"
    path.write_bytes(_framed(data))
    header = records.read_header(str(path))
    assert header == records.RecordHeader(file=str(path), dataset="toyota", num_classes=31,
                                          modalities=("rgb", "flow", "object"), fps=float(np.float32(29.97)),
                                          height=240, width=320, flow="opencv", segmenter="none")
    assert records._list_names(records._Stream(io.BytesIO(lists), len(lists), "x"), len(lists)) == {
        "rgb", "flow_x", "flow_y"}


def test_the_first_record_and_its_framing(tmp_path):
    path = tmp_path / "f.tfrecord"
    path.write_bytes(_framed(b"0123456789") + _framed(b"second"))
    assert records.first_record(str(path)) == b"0123456789"
    path.write_bytes(_framed(b"0123456789")[:16])
    with pytest.raises(RecordsError, match=rf"^{path}: truncated TFRecord file \(the first record needs 10 bytes, "
                                           r"4 are there\)$"):
        records.first_record(str(path))
    for name, blob in (("short", b"\x0a\x00\x00\x00\x00"), ("eleven", b"\x00" * 11)):
        (tmp_path / name).write_bytes(blob)
        for read in (records.first_record, records.read_header):
            with pytest.raises(RecordsError, match=rf"^{tmp_path / name}: truncated TFRecord file "
                                                   rf"\({len(blob)} bytes\)$"):
                read(str(tmp_path / name))
    (tmp_path / "empty").write_bytes(b"")
    assert records.first_record(str(tmp_path / "empty")) is None
    (tmp_path / "twelve").write_bytes(b"\x00" * 12)  # an empty record: the header is all there
    assert records.first_record(str(tmp_path / "twelve")) == b""


@pytest.mark.parametrize("data, reason", [
    (_key(1, 3), "unsupported wire type 3"),
    (_key(1, 6), "unsupported wire type 6"),
    (_len(1, b"") + b"\x80" * 10 + b"\x01", "bad varint"),  # an eleven-byte key
    (_key(3, 2) + b"\x05abcd", "a field runs past the end of the record"),  # skipped
    (_key(1, 2) + b"\x05abcd", "a field runs past the end of the record"),  # read: the context
    (_key(2, 2) + b"\x05" + _len(1, b""), "a field runs past the end of the record"),  # the lists, one byte short
    (_key(4, 1) + b"1234567", "a field runs past the end of the record"),
    (_key(4, 5) + b"123", "a field runs past the end of the record"),
    (_key(4, 0) + b"\x80", "a field runs past the end of the record"),  # a varint cut by the record's end
    (_len(2, _len(1, _len(1, b"\xff"))), "'utf-8' codec can't decode byte 0xff"),
])
def test_read_header_refuses_what_is_not_a_sequence_example(tmp_path, data, reason):
    path = tmp_path / "b.tfrecord"
    path.write_bytes(_framed(data))
    with pytest.raises(RecordsError, match=rf"^{path}: not a tf.train.SequenceExample \({reason}"):
        records.read_header(str(path))


def test_read_header_needs_the_whole_first_record_and_its_crc(tmp_path):
    data = _example(_CONTEXT, ["rgb"]) + _len(3, b"x" * 100)
    path = tmp_path / "c.tfrecord"
    framed = _framed(data)
    message = rf"^{path}: truncated TFRecord file \(the first record needs {len(data)} bytes, fewer are there\)$"
    for cut in (len(framed) - 1, len(framed) - 4, len(framed) - 60, 30):  # in the CRC, the skipped field, the context
        path.write_bytes(framed[:cut])
        with pytest.raises(RecordsError, match=message):
            records.read_header(str(path))
    path.write_bytes(framed)
    assert records.read_header(str(path)).modalities == ("rgb",)
    path.write_bytes(b"")
    assert records.read_header(str(path)) is None


# -- the files of a folder ---------------------------------------------------------------------------------

def test_the_tfrecord_files_of_a_folder_a_file_or_a_glob(tmp_path):
    for name in ("b.tfrecord", "a.tfrecord-00001-of-00002", "a.tfrecord-00000-of-00002",
                 "a.tfrecord-00000-of-00002.ids", "notes.txt", "c.tfrecords"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.tfrecord").mkdir()  # a folder, not a file
    (tmp_path / "e.tfrecord-1").mkdir()
    shards = [str(tmp_path / n) for n in ("a.tfrecord-00000-of-00002", "a.tfrecord-00001-of-00002", "b.tfrecord")]
    assert records.tfrecord_files(str(tmp_path)) == shards
    assert records.tfrecord_files(str(tmp_path / "b.tfrecord")) == shards[2:]
    assert records.tfrecord_files(str(tmp_path / "a.tfrecord*")) == shards[:2]
    assert records.data_folder(str(tmp_path)) == tmp_path
    assert records.data_folder(str(tmp_path / "b.tfrecord")) == tmp_path
    assert records.data_folder(str(tmp_path / "a.tfrecord*")) == tmp_path
    patterns = [str(tmp_path / "sub" / "*.tfrecord"), str(tmp_path / "sub" / "*.tfrecord-*")]
    (tmp_path / "sub").mkdir()
    with pytest.raises(RecordsError, match="^" + re.escape(f"--data {tmp_path / 'sub'}: no TFRecord files match "
                                                           f"{patterns}") + "$"):
        records.tfrecord_files(str(tmp_path / "sub"))
    with pytest.raises(RecordsError, match="^" + re.escape(f"--data {tmp_path}/x*: no TFRecord files match "
                                                           f"['{tmp_path}/x*']") + "$"):
        records.tfrecord_files(f"{tmp_path}/x*")


def test_headers_of_every_non_empty_file(tmp_path):
    (tmp_path / "a.tfrecord").write_bytes(_framed(_example(_CONTEXT, ["rgb"])))
    (tmp_path / "b.tfrecord").write_bytes(b"")
    (tmp_path / "c.tfrecord-0").write_bytes(_framed(_example({**_CONTEXT, "num_classes": _int_feature(157)})))
    files, found = records.headers(str(tmp_path))
    assert files == [str(tmp_path / n) for n in ("a.tfrecord", "b.tfrecord", "c.tfrecord-0")]
    assert [(h.file, h.num_classes, h.modalities) for h in found] == [(files[0], 31, ("rgb",)), (files[2], 157, ())]


def test_records_behind_a_url_are_read_with_tensorflow():
    import tensorflow as tf

    folder = "ram://records_test_url"
    with tf.io.gfile.GFile(f"{folder}/a.tfrecord", "wb") as f:
        f.write(_framed(_example(_CONTEXT, ["rgb"]) + _len(3, b"x" * 50)))
    files, found = records.headers(f"{folder}/*.tfrecord")
    assert files == [f"{folder}/a.tfrecord"] and found[0].file == files[0]
    assert (found[0].dataset, found[0].modalities) == ("toyota", ("rgb",))
    assert records.first_record(files[0]) == _example(_CONTEXT, ["rgb"]) + _len(3, b"x" * 50)


# -- the settings ----------------------------------------------------------------------------------------------

def test_settings_from_json_keep_the_known_settings_only():
    assert RecordSettings.from_json({"fps": None, "size": 256, "dataset": "charades", "written": 3}) == RecordSettings(
        dataset="charades", size=256)
    assert RecordSettings.from_json({}) == RecordSettings()
    assert RecordSettings().to_json() == {}
    full = RecordSettings(dataset="toyota", num_classes=31, fps=29.97, size=240, flow="none", segmenter="mask")
    assert full.to_json() == {"dataset": "toyota", "num_classes": 31, "fps": 29.97, "size": 240, "flow": "none",
                              "segmenter": "mask"}
    assert full.merged(RecordSettings(dataset="charades", size=256)) == full
    assert RecordSettings(size=128, flow="tensor").merged(full) == dataclasses.replace(full, size=128, flow="tensor")


def test_each_difference_is_named_by_its_flag():
    a = RecordSettings(dataset="toyota", num_classes=31, fps=29.97, size=240, flow="none", segmenter="mask")
    b = RecordSettings(dataset="charades", num_classes=157, fps=6.0, size=256, flow="opencv", segmenter="none")
    assert a.differences(b) == ["dataset toyota -> charades", "classes 31 -> 157", "--fps 29.97 -> 6",
                                "--size 240 -> 256", "--flow none -> opencv", "--segmenter mask -> none"]
    assert a.differences(RecordSettings()) == [] and RecordSettings().differences(a) == []
    assert a.differences(a) == []
    assert RecordSettings(fps=1e7).differences(RecordSettings(fps=2.5e-7)) == ["--fps 1e+07 -> 2.5e-07"]


def test_fps_are_the_same_within_float32_rounding_whichever_side_is_an_int():
    assert RecordSettings(fps=30).differences(RecordSettings(fps=30.000001)) == []  # 3e-8 apart
    assert RecordSettings(fps=30.000001).differences(RecordSettings(fps=30)) == []
    assert RecordSettings(fps=30.0).differences(RecordSettings(fps=30.00001)) == []  # 3.3e-7: within 1e-6
    assert RecordSettings(fps=30.0).differences(RecordSettings(fps=30.0001)) == ["--fps 30 -> 30.0001"]  # 3.3e-6
    assert RecordSettings(fps=30).differences(RecordSettings(fps=31)) == ["--fps 30 -> 31"]


def test_a_headers_settings_and_description():
    header = records.RecordHeader(file="f", dataset="toyota", num_classes=31, modalities=("rgb", "flow"), fps=6,
                                  height=320, width=240, flow="opencv", segmenter="none")
    assert header.settings == RecordSettings(dataset="toyota", num_classes=31, fps=6.0, size=240, flow="opencv",
                                             segmenter="none")
    assert isinstance(header.settings.fps, float)
    assert header.describe() == ("toyota records with 31 classes and rgb+flow at 6 fps, shorter side 240, "
                                 "--flow opencv, --segmenter none")
    for height, width in ((0, 240), (240, 0), (None, 240), (240, None)):
        assert dataclasses.replace(header, height=height, width=width).settings.size is None
    bare = records.RecordHeader(file="f", dataset="charades", num_classes=157, modalities=("rgb",))
    assert bare.settings == RecordSettings(dataset="charades", num_classes=157)
    assert bare.describe() == "charades records with 157 classes and rgb"
    assert dataclasses.replace(bare, fps=29.97, segmenter="mask").describe() == (
        "charades records with 157 classes and rgb at 29.97 fps, --segmenter mask")
    assert dataclasses.replace(bare, height=90, width=160, flow="none").describe() == (
        "charades records with 157 classes and rgb, shorter side 90, --flow none")


def test_the_summary_next_to_the_records(tmp_path):
    assert records.read_summary(str(tmp_path)) == {}
    (tmp_path / "summary.json").write_text('{"fps": 6, "written": 2}')
    assert records.read_summary(str(tmp_path)) == {"fps": 6, "written": 2}
    assert records.read_summary(str(tmp_path / "a.tfrecord")) == {"fps": 6, "written": 2}  # a file of the folder
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert records.read_summary(str(tmp_path)) == {}
    for text in (b"{", b"\xff"):
        (tmp_path / "summary.json").write_bytes(text)
        with pytest.raises(RecordsError, match=rf"^{tmp_path / 'summary.json'}: not valid JSON \(\S"):
            records.read_summary(str(tmp_path))
    (tmp_path / "summary.json").unlink()
    (tmp_path / "summary.json").mkdir()  # not a file
    assert records.read_summary(str(tmp_path)) == {}


def test_a_runs_preprocess_json(tmp_path):
    path = tmp_path / "preprocess.json"
    assert records.read_settings(path) is None
    path.write_text('{"fps": 6.0, "size": 256, "flow": null, "other": 1}')
    assert records.read_settings(str(path)) == RecordSettings(fps=6.0, size=256)
    for text in (b"{", b"\xff", b"[1]", b"null"):
        path.write_bytes(text)
        with pytest.raises(RecordsError, match=rf"^{path}: not a preprocess.json \(\S"):
            records.read_settings(path)
    path.unlink()
    path.mkdir()
    assert records.read_settings(path) is None


def test_feature_list_names_after_a_long_value_and_other_fields(tmp_path):
    # A map entry may hold its value before its key; one over 16 KB has a three-byte length, which must be
    # counted in the entry's end (it was not: the name "a" below was read as the next entry).
    lists = (_len(1, _len(2, b"x" * 16400) + _len(1, b"a")) + _entry(b"rgb", b"")
             + _key(2, 5) + b"abcd" + _len(3, b"\x0a\x03rgb") + _key(4, 1) + b"\x0a\x03flow_x"  # not map entries
             + _len(1, _len(1, b"flow_x") + _key(3, 2) + b"\x00") + _entry(b"flow_y", b""))
    assert len(_v(len(_len(2, b"x" * 16400) + _len(1, b"a")))) == 3
    assert records._list_names(records._Stream(io.BytesIO(lists), len(lists), "x"), len(lists)) == {
        "a", "rgb", "flow_x", "flow_y"}
    data = _len(1, b"".join(_entry(k.encode(), v) for k, v in _CONTEXT.items())) + _len(2, lists)
    path = tmp_path / "long.tfrecord"
    path.write_bytes(_framed(data))
    assert records.read_header(str(path)) == records.parse_header(data, str(path))
    assert records.read_header(str(path)).modalities == ("rgb", "flow")


def test_a_record_length_with_the_top_bit_set_is_not_negative(tmp_path):
    # The frame's length is an unsigned 64-bit integer: 2**63 + 5 is far more than the file holds.
    path = tmp_path / "huge.tfrecord"
    path.write_bytes(struct.pack("<Q", 2**63 + 5) + b"\0\0\0\0" + _example(_CONTEXT, ["rgb"]) + b"\0\0\0\0")
    with pytest.raises(RecordsError, match=rf"^{path}: truncated TFRecord file \(the first record needs "
                                           rf"{2**63 + 5} bytes, \d+ are there\)$"):
        records.first_record(str(path))
    with pytest.raises(RecordsError, match=rf"^{path}: truncated TFRecord file \(the first record needs "
                                           rf"{2**63 + 5} bytes, fewer are there\)$"):
        records.read_header(str(path))


def test_a_first_record_longer_than_one_read(tmp_path):
    data = bytes(range(256)) * (1 << 16) + b"tail"  # 16 MiB and 4 bytes: read in two chunks
    path = tmp_path / "long.tfrecord"
    path.write_bytes(_framed(data) + _framed(b"second"))
    assert records.first_record(str(path)) == data
    path.write_bytes(_framed(data)[:-6])
    with pytest.raises(RecordsError, match=rf"^{path}: truncated TFRecord file \(the first record needs "
                                           rf"{len(data)} bytes, {len(data) - 2} are there\)$"):
        records.first_record(str(path))
