"""The records folder's owner (preprocessing/records.py): file headers and the settings of the records."""

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
